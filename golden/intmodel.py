"""The whole-layer integer contract: MiniLM encoder layers in integers only, as the core runs them.

Between stages every tensor is a signed 16-bit fixed-point integer with a
per-tensor scale (a float known to the host), or an index into a codebook.
The stages of one encoder layer (T tokens of one sentence, d = 384, 12 heads
of dh = 32, FFN width 1536), with ``x`` the previous LayerNorm's output (its
gain and bias applied, 16 bits)::

    Q, K, V   = MATMUL(x; attn_in, W_q | W_k | W_v)          per-channel requant
    Qidx_h    = quantize(Q_h; q_h)                           per head (IMU "weights")
    S_h^T     = MATMUL(K_h; k_h, Qidx_h)    key rows stream; the scale folds 1/sqrt(dh)
    P_h       = SOFTMAX(quantize(S_h; scores))               14 fraction bits
    Pidx_h    = quantize(P_h; p)                             (IMU "weights")
    ctx_h^T   = MATMUL(V_h^T; v_h, Pidx_h)  channel rows of V^T stream
    y         = MATMUL(ctx; ctx, W_o)
    u1        = ADD(y, x * M >> s)           residual, into one 16-bit scale
    x1        = NORM(quantize(u1; ln_a))     LayerNorm by histogram + outliers, affine
    f         = MATMUL(x1; ffn_in, W_1)
    m         = LUT(quantize(f; gelu), GELU table)
    y2        = MATMUL(m; ffn_mid, W_2)
    u2        = ADD(y2, x1 * M >> s);  x2 = NORM(quantize(u2; ln_f))

* **MATMUL** (the IMU contract, :mod:`golden.imu`): the input x (16-bit, scale
  ``s_x``) is quantized by its format's thresholds (index ``ia``, centroid
  ``Ca[ia] << shift``) with the ``k`` largest and ``k`` smallest x of each token as
  outliers (Orizuru, dense-and-sparse); ``y_int = sum Cw[n][Iw[n,k]] * A_int[k]``
  exactly; then the **requantization** ``sat16((y_int * M[n] + B[n] + 2**(sh-1)) >>
  sh)`` with ``M`` (16-bit signed) and ``B`` (64-bit) per output channel and one
  shift per weight tile.
* **NORM** (:func:`golden.norm.norm_rows_outliers`): LayerNorm of the row's indices
  with an ``ln_ba``-bit codebook of 16-bit centroids, the row's ``ln_outliers``
  largest and smallest values kept exact (dense-and-sparse, as Orizuru finds them);
  the normalized value has ``NORM_OUT_FRAC`` = 12 fraction bits, and the LayerNorm's
  gain and bias are applied as a per-column requantization into the next tensor's
  16-bit scale (:class:`Norm`).
* **SOFTMAX** (:func:`golden.softmax.softmax_rows`): 15-bit probabilities shifted
  right by 1 (``P_FRAC`` = 14).
* **LUT** (:mod:`golden.lut`): GELU of a ``lut_ba``-bit index, as a 16-bit value.
* **ADD**: ``sat16(a + ((b * M[c] + 2**(sh-1)) >> sh))``, M per column.

Embedding lookup (and its sum) and mean pooling stay on the host; the host
hands the core ``u0 = round(embedding / s_u0)`` and the core starts with the
embedding LayerNorm.  The last LayerNorm's affine is applied by the host before
pooling.  Every format is fitted on calibration text by running this integer
model stage by stage (each fit sees what the integer stages upstream produce).
"""

import math
from dataclasses import dataclass, field

import torch

from base.formats import NORM_OUT_FRAC
from golden import lut as lutmod
from golden.imu import dequant_matmul
from golden.kmeans import kmeans1d
from golden.minilm import load_minilm
from golden.norm import norm_rows_outliers
from golden.quant import fit_weight_codebook, top_outliers
from golden.quantizer import quantize, thresholds_from_codebook
from golden.softmax import exp_table, softmax_rows_table

__all__ = ["IntConfig", "Format", "Requant", "Linear", "IntModel", "Norm", "P_FRAC", "sat16",
           "build", "evaluate_integer", "embeddings", "sentence_embedding", "cached_build", "int_config"]

#: Fraction bits of a probability in the activation buffer (softmax's 15, shifted by 1).
P_FRAC = 14
P_SHIFT = 1
I16 = (-(1 << 15), (1 << 15) - 1)


def sat16(t):
    return t.clamp(*I16)


def _shift_round(v, sh):
    """``(v + 2**(sh-1)) >> sh`` (arithmetic), the rounding every requantization uses."""
    return (v + (1 << (sh - 1))) >> sh if sh > 0 else v << -sh


@dataclass(frozen=True)
class IntConfig:
    """The integer model's choices (the core's CoreConfig must be able to run them)."""
    bw: int = 4              # weight index bits
    ba: int = 4              # MATMUL input index bits
    cw: int = 8              # weight centroid bits
    ca: int = 8              # activation centroid bits
    outliers: int = 8        # k per side for the four linear inputs
    k_outliers: int = 4      # k per side for a key's row of K (QK^T: K streams, Q weights)
    v_outliers: int = 4      # k per side for a channel's row of V^T (A V: V streams, P weights)
    attn_ba: int = 8         # index bits of the K and V^T rows (MATMUL inputs)
    sm_ba: int = 6           # softmax index bits
    ln_ba: int = 6           # LayerNorm index bits (16-bit centroids)
    ln_outliers: int = 8     # k per side kept exact in a LayerNorm row
    q_per_head: bool = True  # Q codebooks per head (else one per layer)
    kv_per_head: bool = False  # K and V^T row formats per head (else one per layer)
    lut_ba: int = 8          # GELU index bits
    headroom: float = 1.25   # int16 scale: calibration max * headroom = 32767
    gptq: bool = True        # weight error compensation (golden.quant)


def int_config(assignments):
    """An :class:`IntConfig` from ``["name=value", ...]`` (integers, floats, true/false);
    ``ValueError`` names the bad item."""
    import dataclasses
    fields = {f.name: f.type for f in dataclasses.fields(IntConfig)}
    values = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"integer model: unknown setting {item!r} (settings: "
                             f"{', '.join(fields)})")
        kind = type(getattr(IntConfig(), name))
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                values[name] = text.lower() in ("true", "1")
            else:
                values[name] = kind(text)
        except ValueError:
            raise ValueError(f"integer model: {name} must be a {kind.__name__}, got {text!r}") from None
    cfg = IntConfig(**values)
    for name in ("bw", "ba", "attn_ba", "sm_ba", "ln_ba", "lut_ba"):
        if not 1 <= getattr(cfg, name) <= 8:
            raise ValueError(f"integer model: {name} must be in 1..8, got {getattr(cfg, name)}")
    for name in ("outliers", "k_outliers", "v_outliers", "ln_outliers"):
        if not 0 <= getattr(cfg, name) <= 64:
            raise ValueError(f"integer model: {name} must be in 0..64, got {getattr(cfg, name)}")
    if not cfg.headroom >= 1.0:
        raise ValueError(f"integer model: headroom must be >= 1, got {cfg.headroom}")
    return cfg


# ---------------------------------------------------------------------- formats

@dataclass
class Format:
    """A quantizer format on a 16-bit tensor: sorted centroids ``Ca`` (``ca`` bits, value
    ``Ca << shift`` in the input's units), their thresholds, ``k`` outliers per side."""
    name: str
    ba: int
    Ca: torch.Tensor
    shift: int
    thresholds: torch.Tensor
    k: int
    scale: float             # the input's units (float value of one LSB)

    def index(self, x):
        return quantize(x, self.thresholds)

    def residual(self, x, idx):
        """The outliers' residuals ``x - (Ca[idx] << shift)``, 0 elsewhere (per row)."""
        if not self.k:
            return None
        mask = top_outliers(x, min(self.k, x.shape[-1] // 2))
        return torch.where(mask, x - (self.Ca[idx] << self.shift), 0)

    def act_int(self, x):
        """``(idx, residual, A_int)``: the IMU's activation operand in x units."""
        idx = self.index(x)
        r = self.residual(x, idx)
        a = self.Ca[idx] << self.shift
        return idx, r, a if r is None else a + r

    @property
    def values(self):
        """Centroids in the input's units."""
        return self.Ca << self.shift


def fit_format(name, xs, ba, *, scale, ca=8, k=0):
    """A :class:`Format` fitted by K-Means on the integer values ``xs`` (a list of
    (rows, K) tensors); the outliers (``k`` per side and row) are left out of the fit."""
    vals = []
    for x in xs:
        keep = ~top_outliers(x, min(k, x.shape[-1] // 2)) if k else torch.ones_like(x, dtype=torch.bool)
        vals.append(x[keep])
    v = torch.cat(vals).double()
    if v.numel() > 400_000:
        v = v[:: v.numel() // 400_000 + 1]
    J = 2 ** ba
    if int(v.unique().numel()) < J:          # fewer distinct values than centroids
        v = torch.cat([v, torch.linspace(float(v.min()) - J, float(v.max()) + J, J).round()])
    c, _ = kmeans1d(v, J, name=name)
    qmax = 2 ** (ca - 1) - 1
    shift = max(0, math.ceil(math.log2(max(float(c.abs().max()), 1.0) / qmax)))
    Ca = torch.round(c / 2 ** shift).clamp(-qmax - 1, qmax).long()
    return Format(name, ba, Ca, shift, thresholds_from_codebook(Ca << shift), k, scale)


# ---------------------------------------------------------------- requantization

@dataclass
class Requant:
    """``sat16((y * M + B + 2**(sh-1)) >> sh)`` per output channel."""
    M: torch.Tensor          # (N,) int64, |M| < 2**15
    B: torch.Tensor          # (N,) int64
    sh: int

    def __call__(self, y):
        return sat16(_shift_round(y * self.M + self.B, self.sh))


def make_requant(unit, bias, s_out, m_bits=16):
    """From ``y_int`` in units ``unit`` (N,) plus a float ``bias`` (N,) to ``s_out``."""
    f = unit.double() / s_out
    top = float(f.abs().max())
    sh = max(0, math.floor(math.log2((2 ** (m_bits - 1) - 1) / top))) if top > 0 else 0
    sh = min(sh, 62)
    M = torch.round(f * 2 ** sh).long()
    B = torch.round(bias.double() / s_out * 2 ** sh).long()
    return Requant(M, B, sh)


def int16_scale(xs, headroom):
    m = max(float(x.abs().max()) for x in xs)
    return max(m, 1e-12) * headroom / I16[1]


# ----------------------------------------------------------------------- linears

@dataclass
class Linear:
    """A MATMUL with fixed weights: quantized ``W`` (N x K), requant to ``s_out``."""
    name: str
    fmt: Format              # its input's format
    Iw: torch.Tensor         # (N, K)
    Cw: torch.Tensor         # (N, 2**bw)
    rq: Requant
    s_out: float
    unit: torch.Tensor       # (N,) float: y_float = unit * y_int + bias
    bias: torch.Tensor

    def __call__(self, x):
        return self.rq(imu_matmul(self.fmt, self.Iw, self.Cw, x))

    def to_scale(self, s_out):
        """The same weights requantized to another output scale."""
        return Linear(self.name, self.fmt, self.Iw, self.Cw,
                      make_requant(self.unit, self.bias, s_out), s_out, self.unit, self.bias)


def imu_matmul(fmt, Iw, Cw, x):
    """``y_int`` (rows, N) of the IMU contract: exact, in int64 (dequantized both sides)."""
    _, _, a = fmt.act_int(x)
    W = Cw.gather(1, Iw)
    # float64 holds every partial sum exactly: |a| < 2**17, |W| < 2**cw, K <= 2**12
    return torch.round(a.double() @ W.double().T).long()


# ------------------------------------------------------------------ the model

@dataclass
class Layer:
    qkv: list = None                 # [Linear q, k, v]
    q_fmt: list = None               # per head: Q -> indices (IMU weights of S^T = K Q^T)
    k_fmt: list = None               # per head: K rows (IMU activations)
    v_fmt: list = None               # per head: V^T rows (IMU activations of ctx^T = V^T P^T)
    s_rq: list = None                # per head: scores requant (one M for all keys)
    s_scale: float = 0.0
    s_fmt: Format = None             # scores -> softmax indices
    exp: torch.Tensor = None         # (J, J) exp table
    p_fmt: Format = None             # P -> indices (IMU weights)
    ctx_rq: Requant = None
    ctx_scale: float = 0.0
    attn_out: Linear = None
    add_a: tuple = None              # (M (d,), sh) residual z * g
    ln_a: "Norm" = None
    ffn_in: Linear = None
    gelu_fmt: Format = None
    gelu: torch.Tensor = None        # (2**lut_ba,) int16 table
    m_scale: float = 0.0
    ffn_out: Linear = None
    add_f: tuple = None
    ln_f: "Norm" = None


@dataclass
class IntModel:
    cfg: IntConfig
    s_u0: float = 0.0
    ln_emb: "Norm" = None
    layers: list = field(default_factory=list)

    # ---- stages, on one sentence (tensors (T, ...))
    @staticmethod
    def add(a, b, params):
        M, sh = params
        return sat16(a + _shift_round(b * M, sh))

    @staticmethod
    def scores_int(L, Q, K, h):
        """``S[q, t]`` of head h before requantization: the IMU computes ``S^T``, each key
        row of K (with its outliers) streaming against the query indices as weights."""
        sl = slice(32 * h, 32 * h + 32)
        qf = L.q_fmt[h]
        return imu_matmul(L.k_fmt[h], qf.index(Q[:, sl]), qf.Ca.expand(len(Q), -1), K[:, sl]).T

    @staticmethod
    def context_int(L, p, V, h):
        """``ctx[q, c]`` of head h before requantization: each channel's row of V^T (with its
        outliers) streams against the probability indices as weights."""
        sl = slice(32 * h, 32 * h + 32)
        return imu_matmul(L.v_fmt[h], L.p_fmt.index(p), L.p_fmt.Ca.expand(len(p), -1),
                          V[:, sl].T).T

    def attention(self, L, Q, K, V):
        ctx = torch.zeros_like(Q)
        for h in range(12):
            p = self.softmax(L, L.s_rq[h](self.scores_int(L, Q, K, h)))
            ctx[:, 32 * h:32 * h + 32] = L.ctx_rq(self.context_int(L, p, V, h))
        return ctx

    @staticmethod
    def softmax(L, S):
        p, _ = softmax_rows_table(L.s_fmt.index(S), L.exp)
        return sat16(p >> P_SHIFT)

    def layer(self, i, x):
        L = self.layers[i]
        Q, K, V = (lin(x) for lin in L.qkv)
        ctx = self.attention(L, Q, K, V)
        x1 = L.ln_a(self.add(L.attn_out(ctx), x, L.add_a))
        m = lutmod.apply(L.gelu, L.gelu_fmt.index(L.ffn_in(x1)))
        return L.ln_f(self.add(L.ffn_out(m), x1, L.add_f))

    def embed_int(self, emb):
        return sat16(torch.round(emb.double() / self.s_u0).long())

    def forward(self, emb, layers=None):
        """The last LayerNorm's output (T, d) int16 of a sentence's embeddings (T, d) float."""
        x = self.ln_emb(self.embed_int(emb))
        for i in range(len(self.layers) if layers is None else layers):
            x = self.layer(i, x)
        return x

    def scale_after(self, layers):
        """The float value of one LSB of the hidden state after ``layers`` layers."""
        return self.ln_emb.s_x if layers == 0 else self.layers[layers - 1].ln_f.s_x


@dataclass
class Norm:
    """LayerNorm by histogram with outliers (:func:`golden.norm.norm_rows_outliers`), then
    the per-column affine ``sat16((z * G[c] + B[c] + 2**(sh-1)) >> sh)`` into ``s_x`` units
    (z: the norm's 12 fraction bits)."""
    fmt: Format
    G: torch.Tensor
    B: torch.Tensor
    sh: int
    s_x: float

    def normalized(self, u):
        idx = self.fmt.index(u)
        mask = top_outliers(u, self.fmt.k) if self.fmt.k else None
        return norm_rows_outliers(idx, self.fmt.values, u, mask)

    def __call__(self, u):
        return sat16(_shift_round(self.normalized(u) * self.G + self.B, self.sh))


def fit_norm(name, us, cfg, gain, bias):
    fmt = fit_format(name, us, cfg.ln_ba, scale=0.0, ca=16, k=cfg.ln_outliers)
    probe = Norm(fmt, None, None, 0, 0.0)
    zs = [probe.normalized(u).double() * 2.0 ** -NORM_OUT_FRAC for u in us]
    s_x = int16_scale([z * gain.double() + bias.double() for z in zs], cfg.headroom)
    rq = make_requant(gain.double() * 2.0 ** -NORM_OUT_FRAC, bias.double(), s_x)
    return Norm(fmt, rq.M, rq.B, rq.sh, s_x)


# --------------------------------------------------------------------- building

def embeddings(model, sentence):
    batch = model.tokenize([sentence])
    t = model.t
    T = batch.input_ids.shape[1]
    e = (t["embeddings.word_embeddings.weight"][batch.input_ids[0]]
         + t["embeddings.position_embeddings.weight"][:T]
         + t["embeddings.token_type_embeddings.weight"][batch.token_type_ids[0]])
    return e


def _ln(model, name):
    return model.t[f"{name}.weight"], model.t[f"{name}.bias"]


def build(sentences, cfg=IntConfig(), model=None, progress=None, layers=None):
    """Fit every format of the integer model on calibration ``sentences`` (the first
    ``layers`` encoder layers; default all)."""
    say = progress or (lambda text: None)
    model = model or load_minilm()
    c = cfg
    im = IntModel(cfg)
    embs = [embeddings(model, s) for s in sentences]
    im.s_u0 = int16_scale(embs, c.headroom * 1.2)
    u = [im.embed_int(e) for e in embs]
    im.ln_emb = fit_norm("ln_emb", u, c, *_ln(model, "embeddings.LayerNorm"))
    xs = [im.ln_emb(x) for x in u]
    dh = 32
    heads = [slice(h * dh, (h + 1) * dh) for h in range(12)]

    def linear(name, fmt, xs, W, b, unit_in):
        """Fit W (N x K) acting on x * unit_in; the requant to a scale set later."""
        a = torch.cat([fmt.act_int(x)[2] for x in xs]).double()
        H = a.T @ a / len(a)
        cb = fit_weight_codebook(W.double() * unit_in, c.bw, cw=c.cw, H=H, gptq=c.gptq,
                                 name=name)
        unit = cb.sw.double()                      # y_float = sw[n] * y_int + bias
        ys = [imu_matmul(fmt, cb.Iw, cb.Cw, x) for x in xs]
        s_out = int16_scale([y.double() * unit + b.double() for y in ys], c.headroom)
        lin = Linear(name, fmt, cb.Iw, cb.Cw, make_requant(unit, b.double(), s_out), s_out,
                     unit, b.double())
        return lin, ys

    def residual(lin, ys, xs, s_x):
        """``u = y + x``: one int16 scale for both, from the float sums."""
        s_u = int16_scale([y.double() * lin.unit + lin.bias + x.double() * s_x
                           for y, x in zip(ys, xs)], c.headroom * 1.2)
        lin = lin.to_scale(s_u)
        params = _add_params(torch.full((xs[0].shape[1],), s_x / s_u, dtype=torch.double))
        return lin, params, [im.add(lin.rq(y), x, params) for y, x in zip(ys, xs)]

    def weight_formats(name, vals, scale):
        if c.q_per_head:
            return [fit_format(f"{name}{h}", [v[:, sl] for v in vals], c.bw, scale=scale, ca=c.cw)
                    for h, sl in enumerate(heads)]
        return [fit_format(name, vals, c.bw, scale=scale, ca=c.cw)] * 12

    n_layers = model.layers if layers is None else layers
    for i in range(n_layers):
        say(f"fitting layer {i + 1}/{n_layers}")
        L = Layer()
        im.layers.append(L)
        s_x = im.scale_after(i)
        pre = f"encoder.layer.{i}"
        # Q, K, V
        L_in = fit_format(f"layer{i}.attn_in", xs, c.ba, scale=s_x, ca=c.ca, k=c.outliers)
        L.qkv, outs = [], []
        for nm, key in (("query", "attention.self.query"), ("key", "attention.self.key"),
                        ("value", "attention.self.value")):
            lin, ys = linear(f"layer{i}.{nm}", L_in, xs, model.t[f"{pre}.{key}.weight"],
                             model.t[f"{pre}.{key}.bias"], s_x)
            L.qkv.append(lin)
            outs.append([lin.rq(y) for y in ys])
        Qs, Ks, Vs = outs
        sq, sk, sv = (lin.s_out for lin in L.qkv)
        # Q and P are the IMU's "weights" (bw-bit indices, one codebook for every lane);
        # K rows and V^T rows stream as its activations (dense-and-sparse, with outliers)
        L.q_fmt = weight_formats(f"layer{i}.q", Qs, sq)
        if c.kv_per_head:
            L.k_fmt = [fit_format(f"layer{i}.k{h}", [k[:, sl] for k in Ks], c.attn_ba, scale=sk,
                                  ca=c.ca, k=c.k_outliers) for h, sl in enumerate(heads)]
            L.v_fmt = [fit_format(f"layer{i}.v{h}", [v[:, sl].T for v in Vs], c.attn_ba,
                                  scale=sv, ca=c.ca, k=c.v_outliers) for h, sl in enumerate(heads)]
        else:
            L.k_fmt = [fit_format(f"layer{i}.k", [k.reshape(-1, dh) for k in Ks], c.attn_ba,
                                  scale=sk, ca=c.ca, k=c.k_outliers)] * 12
            L.v_fmt = [fit_format(f"layer{i}.v", [v.T.reshape(-1, v.shape[0]) for v in Vs],
                                  c.attn_ba, scale=sv, ca=c.ca, k=c.v_outliers)] * 12
        # scores S^T[t, q]: y_int in units sk * sq * 2**shift_q (per head), times 1/sqrt(dh)
        s_units = [sq * sk * 2 ** f.shift / math.sqrt(dh) for f in L.q_fmt]
        S_int = [(im.scores_int(L, Q, K, h), h) for Q, K in zip(Qs, Ks) for h in range(12)]
        L.s_scale = int16_scale([y.double() * s_units[h] for y, h in S_int], c.headroom)
        L.s_rq = [make_requant(torch.tensor([un]), torch.zeros(1), L.s_scale) for un in s_units]
        S_q = [L.s_rq[h](y) for y, h in S_int]
        L.s_fmt = fit_format(f"layer{i}.scores", S_q, c.sm_ba, scale=L.s_scale, ca=c.ca)
        L.exp = exp_table(L.s_fmt.Ca, L.s_scale * 2 ** L.s_fmt.shift, torch.arange(2 ** c.sm_ba))
        P_all = [im.softmax(L, s) for s in S_q]
        L.p_fmt = fit_format(f"layer{i}.p", P_all, c.bw, scale=2.0 ** -P_FRAC, ca=c.cw)
        # ctx^T[c, q]: y_int in units sv * 2**-P_FRAC * 2**shift_p
        c_unit = sv * 2.0 ** -P_FRAC * 2 ** L.p_fmt.shift
        C_int = [im.context_int(L, P_all[12 * t + h], V, h) for t, V in enumerate(Vs)
                 for h in range(12)]
        L.ctx_scale = int16_scale([y.double() * c_unit for y in C_int], c.headroom)
        L.ctx_rq = make_requant(torch.tensor([c_unit]), torch.zeros(1), L.ctx_scale)
        ctxs = [torch.cat([L.ctx_rq(y) for y in C_int[12 * t:12 * t + 12]], 1)
                for t in range(len(Vs))]
        # attention output, residual, LayerNorm
        L_ctx = fit_format(f"layer{i}.ctx", ctxs, c.ba, scale=L.ctx_scale, ca=c.ca, k=c.outliers)
        lin, ys = linear(f"layer{i}.attn_out", L_ctx, ctxs,
                         model.t[f"{pre}.attention.output.dense.weight"],
                         model.t[f"{pre}.attention.output.dense.bias"], L.ctx_scale)
        L.attn_out, L.add_a, u1 = residual(lin, ys, xs, s_x)
        L.ln_a = fit_norm(f"layer{i}.ln_a", u1, c, *_ln(model, f"{pre}.attention.output.LayerNorm"))
        x1 = [L.ln_a(u) for u in u1]
        # FFN
        L_f = fit_format(f"layer{i}.ffn_in", x1, c.ba, scale=L.ln_a.s_x, ca=c.ca, k=c.outliers)
        L.ffn_in, ys = linear(f"layer{i}.ffn_in", L_f, x1,
                              model.t[f"{pre}.intermediate.dense.weight"],
                              model.t[f"{pre}.intermediate.dense.bias"], L.ln_a.s_x)
        fs = [L.ffn_in.rq(y) for y in ys]
        L.gelu_fmt = fit_format(f"layer{i}.gelu", fs, c.lut_ba, scale=L.ffn_in.s_out, ca=16)
        gv = lutmod.FUNCTIONS["gelu"](L.gelu_fmt.values.double() * L.ffn_in.s_out)
        L.m_scale = float(gv.abs().max()) / I16[1]
        L.gelu = sat16(torch.round(gv / L.m_scale).long())
        ms = [lutmod.apply(L.gelu, L.gelu_fmt.index(f)) for f in fs]
        L_m = fit_format(f"layer{i}.ffn_mid", ms, c.ba, scale=L.m_scale, ca=c.ca, k=c.outliers)
        lin, ys = linear(f"layer{i}.ffn_out", L_m, ms, model.t[f"{pre}.output.dense.weight"],
                         model.t[f"{pre}.output.dense.bias"], L.m_scale)
        L.ffn_out, L.add_f, u2 = residual(lin, ys, x1, L.ln_a.s_x)
        L.ln_f = fit_norm(f"layer{i}.ln_f", u2, c, *_ln(model, f"{pre}.output.LayerNorm"))
        xs = [L.ln_f(u) for u in u2]
    return im


def _add_params(f, m_bits=16):
    top = float(f.abs().max())
    sh = max(0, math.floor(math.log2((2 ** (m_bits - 1) - 1) / top))) if top > 0 else 0
    return torch.round(f * 2 ** sh).long(), sh


# -------------------------------------------------------------------- accuracy

def sentence_embedding(im, model, sentence, layers=None):
    """The host's part after the core: the last LayerNorm's affine, mean pooling, L2 norm."""
    z = im.forward(embeddings(model, sentence), layers)
    n = len(im.layers) if layers is None else layers
    x = z.double() * im.scale_after(n)
    return torch.nn.functional.normalize(x.mean(0), dim=-1).float()


def evaluate_integer(n_eval=500, n_cal=128, cfg=IntConfig(), progress=None):
    """Mean / worst cosine and Spearman of the fully integer model against FP32 on the
    evaluation text of ``kllm eval``."""
    from golden.eval import metrics
    from golden.text import calibration_sentences, evaluation_sentences

    model = load_minilm()
    im = build(calibration_sentences(n_cal), cfg, model, progress)
    ev = evaluation_sentences(n_eval)
    ref = model.embed(ev)
    emb = torch.stack([sentence_embedding(im, model, s) for s in ev])
    return im, metrics(ref, emb)


# ------------------------------------------------------------------------ cache

#: Sources whose change invalidates a cached integer model.
_SOURCES = ("golden/intmodel.py", "golden/quant.py", "golden/kmeans.py", "golden/norm.py",
            "golden/softmax.py", "golden/lut.py", "golden/quantizer.py", "base/formats.py",
            "golden/minilm.py", "golden/text.py")


def cache_key(cfg, n_cal, layers=None):
    import hashlib
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(repr((cfg, n_cal, layers)).encode())
    for name in _SOURCES:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]


def cached_build(cache_dir, n_cal=128, cfg=IntConfig(), progress=None, layers=None):
    """The integer model fitted on ``n_cal`` calibration sentences (its first ``layers``
    layers; default all), from ``cache_dir`` when it was fitted before with the same
    choices and code -- a fit of all layers serves any ``layers`` -- else fitted and
    saved (written to a temporary name and renamed, so an interrupted fit leaves nothing
    behind)."""
    import os
    import tempfile
    from pathlib import Path

    from golden.text import calibration_sentences
    full = Path(cache_dir) / f"intmodel-{cache_key(cfg, n_cal)}.pt"
    path = full if layers is None else Path(cache_dir) / f"intmodel-{cache_key(cfg, n_cal, layers)}.pt"
    for p in dict.fromkeys((full, path)):
        if p.exists():
            try:
                return torch.load(p, weights_only=False)
            except Exception:                  # a damaged cache file: fit again
                p.unlink(missing_ok=True)
    im = build(calibration_sentences(n_cal), cfg, progress=progress, layers=layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".intmodel.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(im, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return im
