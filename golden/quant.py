"""The KLLM quantization scheme on a real model: weights, activations, outliers.

Integer formats follow the numeric contract (docs/ARCHITECTURE.md):

* **Weights** of a linear layer W (N x K): per output channel n a codebook
  of ``2**bw`` centroids fitted by K-Means (optionally sensitivity-weighted),
  rounded to signed ``cw``-bit integers ``Cw[n]`` with a float scale
  ``sw[n]``; indices ``Iw[n, k]``.  Optionally a small share of weights is
  kept exact beside the codebook (dense-and-sparse weights).
* **Activations** entering a linear layer: a fixed-point value
  ``x = round(v / sx)`` of ``xbits`` (16) bits.  One codebook of ``2**ba``
  centroids per layer input, fitted by K-Means on real calibration
  activations, rounded to signed ``ca``-bit integers ``Ca`` with scale
  ``sa = sx * 2**shift``, so a centroid in x's units is exactly
  ``Ca[j] << shift``.  The index comes from the thresholds of
  :func:`golden.quantizer.thresholds_from_codebook` (the RTL's rule).
* **Outliers** (Orizuru): per token, the ``k`` largest and ``k`` smallest
  x stay exact; the dense stream still carries every index, and an outlier
  adds the residual ``r = x - (Ca[ia] << shift)`` (dense-and-sparse).

:class:`QuantHooks` applies a :class:`Scheme` to :class:`golden.minilm.MiniLM`.
Calibration runs in one forward pass over the calibration batch: each
linear layer fits its activation codebook and its weights the first time it
is called, so every layer is fitted on the activations that the already
quantized layers upstream produce.
"""

import math
from dataclasses import dataclass, field

import torch

from golden.kmeans import assign, check_finite, kmeans1d
from golden.minilm import LINEARS, Hooks
from golden.quantizer import quantize as threshold_quantize
from golden.quantizer import thresholds_from_codebook

__all__ = ["Scheme", "WeightCodebook", "ActivationCodebook", "QuantHooks",
           "fit_weight_codebook", "fit_activation_codebook", "top_outliers", "uniform_rtn"]


@dataclass(frozen=True)
class Scheme:
    """One quantization configuration of the whole model."""
    name: str
    method: str = "kmeans"          # "kmeans", "uniform" or "fp32"
    wbits: int = None               # None: weights stay FP32
    abits: int = None               # None: activations stay FP32
    outliers: int = 0               # k per side per token
    cw: int = 8                     # weight centroid bits
    ca: int = 8                     # activation centroid bits
    xbits: int = 16                 # fixed-point activation input bits
    weighting: str = "none"         # "none" or "hessian" (diag of X^T X per column)
    act_weighting: bool = False     # weight activation values by their channel's ||W[:, k]||^2
    gptq: bool = False              # column-by-column error compensation
    sparse: float = 0.0             # share of weights kept exact
    extra_bits: dict = field(default_factory=dict)  # linear name suffix -> wbits override

    def __post_init__(self):
        if self.method not in ("kmeans", "uniform", "fp32"):
            raise ValueError(f"scheme {self.name}: unknown method {self.method!r}")
        for attr, lo, hi in (("wbits", 2, 8), ("abits", 2, 8)):
            v = getattr(self, attr)
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"scheme {self.name}: {attr} must be in {lo}..{hi}, got {v}")
        if self.outliers < 0:
            raise ValueError(f"scheme {self.name}: outliers must be >= 0, got {self.outliers}")
        if self.weighting not in ("none", "hessian"):
            raise ValueError(f"scheme {self.name}: unknown weighting {self.weighting!r}")
        if not 0 <= self.sparse < 0.5:
            raise ValueError(f"scheme {self.name}: sparse must be in [0, 0.5), got {self.sparse}")

    def weight_bits(self, linear):
        for suffix, bits in self.extra_bits.items():
            if linear.endswith(suffix):
                return bits
        return self.wbits


# ---------------------------------------------------------------- weights

@dataclass
class WeightCodebook:
    """Integer weight format of one linear layer (N x K)."""
    Cw: torch.Tensor        # (N, 2**bw) int64, signed cw-bit centroids, sorted per row
    sw: torch.Tensor        # (N,) float64 scale
    Iw: torch.Tensor        # (N, K) int64 indices
    sparse_pos: torch.Tensor = None   # (S, 2) (n, k) of weights kept exact
    sparse_val: torch.Tensor = None   # (S,) their float values
    bits_per_weight: float = 0.0

    def dequantize(self):
        W = self.sw[:, None] * self.Cw.gather(1, self.Iw).double()
        if self.sparse_pos is not None and len(self.sparse_pos):
            W[self.sparse_pos[:, 0], self.sparse_pos[:, 1]] = self.sparse_val.double()
        return W.float()


def _round_codebook(c, bits):
    """Float centroids (N, k) -> signed ``bits``-bit integers and per-row scales."""
    qmax = 2 ** (bits - 1) - 1
    scale = c.abs().amax(dim=1).clamp(min=1e-12) / qmax
    return torch.round(c / scale[:, None]).clamp(-qmax - 1, qmax).long(), scale


def fit_weight_codebook(W, bw, *, cw=8, H=None, weighting="none", gptq=False, sparse=0.0,
                        name="W"):
    """K-Means codebooks for every output channel of ``W`` (N, K).

    ``H`` (K, K): the layer's input second moment ``X^T X`` from calibration,
    used for the sensitivity weights (its diagonal) and for GPTQ-style error
    compensation.  ``sparse``: share of weights kept exact, chosen by their
    (weighted) quantization error.
    """
    W = W.double()
    check_finite(W, name)
    N, K = W.shape
    d = torch.ones(K, dtype=torch.float64) if H is None else H.diag().double().clamp(min=1e-8)
    weights = d[None, :].expand(N, K) if weighting == "hessian" else None
    centroids, _ = kmeans1d(W, 2 ** bw, weights, name=name)
    Cw, sw = _round_codebook(centroids, cw)
    levels = Cw.double() * sw[:, None]                     # the representable values
    sparse_pos = sparse_val = None
    if gptq and H is not None:
        Iw, sparse_pos, sparse_val = _gptq_assign(W, levels, H.double(), sparse=sparse)
    else:
        Iw = assign(W, levels)
    if sparse > 0 and sparse_pos is None:
        err = (levels.gather(1, Iw) - W) ** 2 * d[None, :]
        n_keep = int(round(sparse * N * K))
        flat = err.flatten().topk(n_keep).indices
        sparse_pos = torch.stack([flat // K, flat % K], 1)
        sparse_val = W.flatten()[flat].float()
    # bits: indices + codebook (cw bits per centroid) + a 16-bit scale per row
    # + 32 bits per sparse weight (16-bit value, 16-bit position)
    n_sparse = 0 if sparse_pos is None else len(sparse_pos)
    bpw = bw + (2 ** bw * cw + 16) / K + 32 * n_sparse / (N * K)
    return WeightCodebook(Cw, sw, Iw, sparse_pos, sparse_val, bpw)


def _gptq_assign(W, levels, H, block=128, damp=0.01, sparse=0.0):
    """Quantize columns left to right onto each row's fixed ``levels``, spreading each
    column's error over the columns not yet quantized (GPTQ, Frantar et al. 2023).

    With ``sparse`` > 0, in every column the weights with the largest error
    scaled by the inverse Hessian are kept exact instead (as SpQR does,
    Dettmers et al. 2023): they cost no error to spread.  Returns
    ``(Iw, sparse_pos, sparse_val)``.
    """
    W = W.clone()
    N, K = W.shape
    H = H.clone()
    dead = H.diag() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * H.diag().mean() * torch.eye(K, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Iw = torch.zeros(N, K, dtype=torch.long)
    n_keep = int(round(sparse * N))
    kept_pos, kept_val = [], []
    for b0 in range(0, K, block):
        b1 = min(b0 + block, K)
        Wb = W[:, b0:b1].clone()
        Eb = torch.zeros_like(Wb)
        Hb = Hinv[b0:b1, b0:b1]
        for j in range(b1 - b0):
            w = Wb[:, j]
            idx = assign(w[:, None], levels).squeeze(1)
            q = levels.gather(1, idx[:, None]).squeeze(1)
            Iw[:, b0 + j] = idx
            if n_keep:
                rows = ((w - q).abs() / Hb[j, j]).topk(n_keep).indices
                q = q.clone()
                q[rows] = w[rows]
                kept_pos.append(torch.stack([rows, torch.full_like(rows, b0 + j)], 1))
                kept_val.append(w[rows].float())
            e = (w - q) / Hb[j, j]
            Wb[:, j:] -= e[:, None] * Hb[j, j:][None, :]
            Eb[:, j] = e
        W[:, b1:] -= Eb @ Hinv[b0:b1, b1:]
    if not n_keep:
        return Iw, None, None
    return Iw, torch.cat(kept_pos), torch.cat(kept_val)


def uniform_rtn(W, bits):
    """Symmetric round-to-nearest, one scale per row (per output channel / per token)."""
    qmax = 2 ** (bits - 1) - 1
    scale = W.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    return torch.round(W / scale).clamp(-qmax - 1, qmax) * scale


# ------------------------------------------------------------ activations

def top_outliers(x, k):
    """Boolean mask of the ``k`` largest and ``k`` smallest entries of each row (last dim).

    Rows shorter than ``2k`` are all outliers.  Ties follow Orizuru's contract
    (:mod:`golden.orizuru`): among equal values the lower position is chosen, which a
    stable sort gives (``torch.topk`` leaves the order of ties unspecified).
    """
    K = x.shape[-1]
    if k < 0:
        raise ValueError(f"outlier count k must be >= 0, got {k}")
    if k > K:
        raise ValueError(f"outlier count k={k} is larger than the vector length {K}")
    mask = torch.zeros_like(x, dtype=torch.bool)
    if k == 0:
        return mask
    for descending in (True, False):
        order = torch.sort(x, dim=-1, descending=descending, stable=True).indices
        mask.scatter_(-1, order[..., :k], True)
    return mask


@dataclass
class ActivationCodebook:
    """Integer activation format of one layer input."""
    Ca: torch.Tensor        # (2**ba,) int64 signed ca-bit centroids, sorted
    sx: float               # fixed-point scale of x
    shift: int              # sa = sx * 2**shift
    xbits: int
    thresholds: torch.Tensor  # in x units

    @property
    def sa(self):
        return self.sx * 2 ** self.shift

    def to_fixed(self, v):
        q = 2 ** (self.xbits - 1)
        return torch.round(v.double() / self.sx).clamp(-q, q - 1).long()

    def quantize(self, v, k):
        """``(x, idx, outlier_mask)`` of float activations ``v`` (..., K)."""
        x = self.to_fixed(v)
        idx = threshold_quantize(x, self.thresholds)
        return x, idx, top_outliers(x, k)

    def dequantize(self, x, idx, mask):
        dense = self.Ca[idx] << self.shift
        return torch.where(mask, x, dense).double() * self.sx


def fit_activation_codebook(v, ba, *, k=0, ca=8, xbits=16, headroom=2.0, channel_weights=None,
                            name="activations"):
    """Fit from calibration activations ``v`` (tokens, K): codebook on the non-outliers.

    ``channel_weights`` (K,): importance of each input channel (e.g. the
    energy of the weight column it multiplies), for a sensitivity-weighted fit.
    """
    check_finite(v, name)
    v = v.double()
    sx = float(v.abs().max()) * headroom / (2 ** (xbits - 1) - 1)
    if sx == 0:
        raise ValueError(f"{name}: all calibration values are zero")
    if v.numel() > 400_000:      # an even subsample of tokens is plenty for 2**ba centroids
        v = v[:: v.numel() // 400_000 + 1]
    keep = ~top_outliers(v, k) if k else torch.ones_like(v, dtype=torch.bool)
    bulk = v[keep]
    w = None
    if channel_weights is not None:
        w = channel_weights.double()[None, :].expand_as(v)[keep]
    c, _ = kmeans1d(bulk, 2 ** ba, w, name=name)
    qmax = 2 ** (ca - 1) - 1
    shift = max(0, math.ceil(math.log2(max(float(c.abs().max()), 1e-30) / (qmax * sx))))
    sa = sx * 2 ** shift
    Ca = torch.round(c / sa).clamp(-qmax - 1, qmax).long()
    return ActivationCodebook(Ca, sx, shift, xbits, thresholds_from_codebook(Ca << shift))


# ------------------------------------------------------------------ hooks

class QuantHooks(Hooks):
    """Applies a :class:`Scheme` to every linear layer of the model."""

    def __init__(self, scheme: Scheme):
        self.scheme = scheme
        self.act = {}        # act key -> ActivationCodebook
        self.weights = {}    # linear name -> WeightCodebook (kmeans) or dequantized tensor
        self.wdeq = {}       # linear name -> float weight actually used
        self.col_energy = {}
        self.mask = None
        self.outlier_count = 0
        self.activation_count = 0

    def begin(self, batch):
        self.mask = batch.attention_mask.bool()

    def _tokens(self, x):
        return x[self.mask] if self.mask is not None else x.reshape(-1, x.shape[-1])

    def _act(self, act, x):
        s = self.scheme
        if s.abits is None or s.method == "fp32":
            return x
        if s.method == "uniform":
            mask = top_outliers(x, s.outliers) if s.outliers else torch.zeros_like(x, dtype=torch.bool)
            bulk = torch.where(mask, torch.zeros_like(x), x)
            q = uniform_rtn(bulk, s.abits)
            self._count(mask)
            return torch.where(mask, x, q)
        if act not in self.act:
            cw = self.col_energy.get(act) if s.act_weighting else None
            self.act[act] = fit_activation_codebook(self._tokens(x), s.abits, k=s.outliers,
                                                    ca=s.ca, xbits=s.xbits, channel_weights=cw,
                                                    name=act)
        cb = self.act[act]
        xi, idx, mask = cb.quantize(x, s.outliers)
        self._count(mask)
        return cb.dequantize(xi, idx, mask).float()

    def _count(self, mask):
        tokens = int(self.mask.sum()) if self.mask is not None else mask[..., 0].numel()
        K = mask.shape[-1]
        self.outlier_count += tokens * min(K, 2 * self.scheme.outliers)
        self.activation_count += tokens * K

    def _weight(self, name, W, xq):
        s = self.scheme
        if name in self.wdeq:
            return self.wdeq[name]
        bits = s.weight_bits(name)
        if bits is None or s.method == "fp32":
            Wq = W
        elif s.method == "uniform":
            Wq = uniform_rtn(W, bits)
        else:
            need_h = s.weighting == "hessian" or s.gptq
            H = None
            if need_h:
                t = self._tokens(xq).double()
                H = t.T @ t / len(t)
            cb = fit_weight_codebook(W, bits, cw=s.cw, H=H, weighting=s.weighting,
                                     gptq=s.gptq, sparse=s.sparse, name=name)
            self.weights[name] = cb
            Wq = cb.dequantize()
        self.wdeq[name] = Wq
        return Wq

    def linear(self, name, act, x, weight, bias):
        xq = self._act(act, x)
        return xq @ self._weight(name, weight, xq).T + bias

    def bits_per_weight(self, model):
        """Average stored bits per weight over all linear layers (codebooks, sparse included)."""
        total = bits = 0
        for name in model.linear_names():
            layer, lin = name.split(".")
            n = model.weight(int(layer[5:]), lin).numel()
            total += n
            if name in self.weights:
                bits += self.weights[name].bits_per_weight * n
            else:
                b = self.scheme.weight_bits(name)
                K = model.weight(int(layer[5:]), lin).shape[1]
                bits += (32 if b is None else b + 16 / K) * n
        return bits / total

    def outlier_share(self):
        return self.outlier_count / max(1, self.activation_count)


def calibrate(model, scheme, sentences):
    """A :class:`QuantHooks` fitted on ``sentences`` in one forward pass."""
    hooks = QuantHooks(scheme)
    for i in range(model.layers):
        for lin, act in LINEARS.items():
            # an input channel's error reaches the outputs through its weight column;
            # q, k and v share their input, so their column energies add up
            key = f"layer{i}.{act}"
            e = model.weight(i, lin).double().pow(2).sum(0)
            hooks.col_energy[key] = hooks.col_energy.get(key, 0) + e
    model.embed(sentences, hooks, batch_size=len(sentences))
    hooks.outlier_count = hooks.activation_count = 0
    return hooks
