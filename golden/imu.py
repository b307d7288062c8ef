"""Integer reference of the Index MatMul unit (IMU) and its dequantize-and-multiply baseline.

Both compute, for tokens t and output channels n (numeric contract: docs/ARCHITECTURE.md),

    y[t, n] = sum_k W_int[n, k] * A_int[t, k]
    W_int[n, k] = Cw[n, Iw[n, k]]
    A_int[t, k] = (Ca[ia[t, k]] << shift) + r[t, k]

where ``r`` is the outlier residual ``x - (Ca[ia] << shift)`` at the
positions Orizuru picked and 0 elsewhere.  ``y`` is in units of
``sx * sw[n]``.

* :func:`index_matmul` is the bucket scheme the hardware uses: for each
  output, add the activation centroids into 2**bw buckets chosen by the
  weight index (adds only), then ``2**bw`` multiplies by the weight
  centroids, shifted by ``shift``; plus the sparse correction
  ``sum_outliers r[t, k] * Cw[n, Iw[n, k]]``.
* :func:`dequant_matmul` is the conventional baseline: look both operands up
  in their codebooks and multiply-accumulate.

They are equal by distributivity; the tests check it on random and real
layers, and :func:`accumulator_bits` gives the widths at which nothing can
overflow.
"""

import torch

from golden.minilm import Hooks, load_minilm
from golden.quant import fit_activation_codebook, fit_weight_codebook
from golden.text import calibration_sentences

__all__ = ["index_matmul", "dequant_matmul", "accumulator_bits", "check_operands"]


def _bits_signed(max_abs):
    """Bits of a signed integer that holds every value in [-max_abs, max_abs]."""
    return int(max_abs).bit_length() + 1


def accumulator_bits(*, k_max, bw, ca, cw, shift=0, xbits=16, outliers=0):
    """Widths (signed) at which the IMU cannot overflow for reductions up to ``k_max``.

    Returns a dict: ``bucket`` (one of the 2**bw bucket sums), ``dense`` (the
    centroid combine, after the shift), ``correction`` (sparse part) and
    ``y`` (the result).
    """
    a = 2 ** (ca - 1)                    # |Ca| <= 2**(ca-1)
    w = 2 ** (cw - 1)
    bucket = k_max * a
    dense = (k_max * a * w) << shift     # sum over buckets of |Cw| * |S| <= w * K * a
    r = 2 ** xbits                       # |x - centroid| < 2**xbits
    correction = outliers * r * w
    return {"bucket": _bits_signed(bucket), "dense": _bits_signed(dense),
            "correction": _bits_signed(correction), "y": _bits_signed(dense + correction)}


def check_operands(Iw, Cw, ia, Ca, residual=None):
    N, K = Iw.shape
    if Cw.dim() != 2 or Cw.shape[0] != N:
        raise ValueError(f"Cw must be (N, 2**bw) = ({N}, ...), got {tuple(Cw.shape)}")
    if ia.dim() != 2 or ia.shape[1] != K:
        raise ValueError(f"ia must be (tokens, K) with K = {K}, got {tuple(ia.shape)}")
    if int(Iw.min()) < 0 or int(Iw.max()) >= Cw.shape[1]:
        raise ValueError(f"Iw holds indices outside 0..{Cw.shape[1] - 1}")
    if int(ia.min()) < 0 or int(ia.max()) >= Ca.numel():
        raise ValueError(f"ia holds indices outside 0..{Ca.numel() - 1}")
    if residual is not None and residual.shape != ia.shape:
        raise ValueError(f"residual must have the shape of ia {tuple(ia.shape)}, "
                         f"got {tuple(residual.shape)}")


def index_matmul(Iw, Cw, ia, Ca, *, shift=0, residual=None, chunk=8):
    """The bucket scheme: ``y`` (tokens, N) int64."""
    Iw, Cw, ia, Ca = (t.long() for t in (Iw, Cw, ia, Ca))
    check_operands(Iw, Cw, ia, Ca, residual)
    N, K = Iw.shape
    J = Cw.shape[1]
    a = Ca[ia]                                          # (T, K) activation centroids
    out = []
    for t0 in range(0, len(ia), chunk):
        at = a[t0:t0 + chunk]
        T = len(at)
        # S[t, n, j] = sum over k with Iw[n, k] = j of a[t, k]   (adds only)
        S = torch.zeros(T, N, J, dtype=torch.long)
        S.scatter_add_(2, Iw.expand(T, N, K), at[:, None, :].expand(T, N, K))
        y = (S * Cw[None]).sum(-1) << shift             # 2**bw multiplies per output
        out.append(y)
    y = torch.cat(out) if out else torch.zeros(0, N, dtype=torch.long)
    if residual is not None:
        r = residual.long()
        rows, cols = r.nonzero(as_tuple=True)           # the outliers
        if len(rows):
            w_cols = Cw.gather(1, Iw[:, cols]).T        # (outliers, N): Cw[n, Iw[n, k]]
            y.index_add_(0, rows, r[rows, cols][:, None] * w_cols)
    return y


def dequant_matmul(Iw, Cw, ia, Ca, *, shift=0, residual=None):
    """The baseline: dequantize both sides to integers and multiply-accumulate."""
    Iw, Cw, ia, Ca = (t.long() for t in (Iw, Cw, ia, Ca))
    check_operands(Iw, Cw, ia, Ca, residual)
    W_int = Cw.gather(1, Iw)                            # (N, K)
    A_int = Ca[ia] << shift
    if residual is not None:
        A_int = A_int + residual.long()
    # exact int64 product: float64 holds these sums exactly only below 2**53, so
    # stay in integers
    return (A_int[:, None, :] * W_int[None, :, :]).sum(-1)


# ------------------------------------------------------------------ host driver
#
# How software runs a layer on the unit (hdl/imu.py).  A layer W (N x K) is
# cut into tiles of at most L output channels x k_max inputs: the tile at
# (n0, k0) holds rows n0 .. n0+L-1 and columns k0 .. k0+k_max-1.  For each
# tile the host writes the weight indices (one lane's P indices per write,
# row = k // P) and the lanes' weight codebooks; lanes beyond N get index 0
# and an all-zero codebook, so they return 0.  Every token vector streams the
# tile's columns of ``ia``, P per beat (the last beat may be partial, its
# ``count`` says how many), with that tile's outliers (position inside the
# tile, residual) on the outlier port.  The unit returns one beat of L
# results per vector; the host adds the partial results of the K tiles of a
# row of tiles.  Each tile's result is exact (widths from k_max), so is the
# sum in the host's integers.

__all__ += ["tiles", "check_config_operands", "weight_writes", "codebook_writes",
            "act_codebook_writes", "input_beats", "outlier_beats", "tile_programs", "assemble",
            "run_tiled", "real_layer_operands"]


def tiles(cfg, N, K):
    """``[(n0, n1, k0, k1), ...]``: the tiles of an N x K layer, row of tiles by row."""
    if N < 1 or K < 1:
        raise ValueError(f"{cfg.UNIT}: layer must have N >= 1 and K >= 1, got {N} x {K}")
    return [(n0, min(N, n0 + cfg.outputs), k0, min(K, k0 + cfg.k_max))
            for n0 in range(0, N, cfg.outputs) for k0 in range(0, K, cfg.k_max)]


def _check_range(name, t, bits, cfg):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"{cfg.UNIT}: {name} holds values outside {lo}..{hi} "
                         f"({bits}-bit signed), got {int(t.min())}..{int(t.max())}")


def check_config_operands(cfg, Iw, Cw, ia, Ca, shift=0, residual=None, tile=False):
    """Refuse operands the unit configured by ``cfg`` cannot take, with the shapes in the text.

    ``tile=True``: the operands must fit one tile (N <= L, K <= k_max).
    """
    Iw, Cw, ia, Ca = (torch.as_tensor(t).long() for t in (Iw, Cw, ia, Ca))
    if Iw.dim() != 2:
        raise ValueError(f"{cfg.UNIT}: Iw must be (N, K), got shape {tuple(Iw.shape)}")
    N, K = Iw.shape
    if Cw.shape != (N, 2 ** cfg.bw):
        raise ValueError(f"{cfg.UNIT}: Cw must be (N, 2**bw) = ({N}, {2 ** cfg.bw}), "
                         f"got {tuple(Cw.shape)}")
    if Ca.shape != (2 ** cfg.ba,):
        raise ValueError(f"{cfg.UNIT}: Ca must be (2**ba,) = ({2 ** cfg.ba},), "
                         f"got {tuple(Ca.shape)}")
    if ia.dim() != 2 or ia.shape[1] != K:
        raise ValueError(f"{cfg.UNIT}: ia must be (tokens, K) with K = {K}, "
                         f"got {tuple(ia.shape)}")
    if tile and (N > cfg.outputs or K > cfg.k_max):
        raise ValueError(f"{cfg.UNIT}: a tile is at most outputs x k_max = {cfg.outputs} x "
                         f"{cfg.k_max}, got Iw {N} x {K}")
    check_operands(Iw, Cw, ia, Ca, residual)
    _check_range("Cw", Cw, cfg.cw, cfg)
    _check_range("Ca", Ca, cfg.ca, cfg)
    if not 0 <= shift <= cfg.shift_max:
        raise ValueError(f"{cfg.UNIT}: shift must be in 0..{cfg.shift_max} (xbits - ca), "
                         f"got {shift}")
    if residual is not None:
        residual = torch.as_tensor(residual).long()
        _check_range("residual", residual, cfg.rbits, cfg)
        for k0 in range(0, K, cfg.k_max):
            per_token = (residual[:, k0:k0 + cfg.k_max] != 0).sum(1)
            if len(per_token) and int(per_token.max()) > cfg.outliers:
                raise ValueError(f"{cfg.UNIT}: a token has {int(per_token.max())} outliers in "
                                 f"columns {k0}..{min(K, k0 + cfg.k_max) - 1}, the unit takes at "
                                 f"most outliers = {cfg.outliers} per tile")


def weight_writes(cfg, Iw):
    """Host writes of one tile's weight indices: ``[(lane, row, [P indices]), ...]`` for every
    lane (lanes beyond the tile's N and positions beyond K get index 0)."""
    Iw = torch.as_tensor(Iw).long()
    N, K = Iw.shape
    if N > cfg.outputs or K > cfg.k_max:
        raise ValueError(f"{cfg.UNIT}: a tile is at most outputs x k_max = {cfg.outputs} x "
                         f"{cfg.k_max}, got Iw {N} x {K}")
    P = cfg.elems
    rows = -(-K // P)
    pad = torch.zeros(cfg.outputs, rows * P, dtype=torch.long)    # lanes beyond N: index 0
    pad[:N, :K] = Iw
    return [(n, r, pad[n, r * P:(r + 1) * P].tolist())
            for n in range(cfg.outputs) for r in range(rows)]


def codebook_writes(cfg, Cw):
    """Host writes of the lanes' weight codebooks: ``[(lane, j, value), ...]``; lanes beyond
    the tile's N get zeros (their results are 0 and dropped)."""
    Cw = torch.as_tensor(Cw).long()
    rows = Cw.tolist() + [[0] * 2 ** cfg.bw] * (cfg.outputs - len(Cw))
    return [(n, j, v) for n, row in enumerate(rows) for j, v in enumerate(row)]


def act_codebook_writes(cfg, Ca, shift):
    """Host writes of the activation codebook and the layer's shift: ``[(j, value, shift)]``."""
    return [(j, int(v), shift) for j, v in enumerate(torch.as_tensor(Ca).tolist())]


def input_beats(cfg, ia_row):
    """Beats of one token vector of activation indices (the last may be partial)."""
    P = cfg.elems
    ia_row = [int(v) for v in ia_row]
    beats = []
    for b in range(0, len(ia_row), P):
        chunk = ia_row[b:b + P]
        beats.append({"idx": chunk + [0] * (P - len(chunk)), "count": len(chunk),
                      "first": int(b == 0), "last": int(b + P >= len(ia_row))})
    return beats


def outlier_beats(cfg, residual_row):
    """Outlier beats of one token vector: its non-zero residuals, or one zero entry."""
    r = torch.as_tensor(residual_row).long()
    pos = r.nonzero(as_tuple=True)[0].tolist()
    pairs = [(p, int(r[p])) for p in pos] or [(0, 0)]
    return [{"pos": p, "r": v, "last": int(j == len(pairs) - 1)} for j, (p, v) in enumerate(pairs)]


def tile_programs(cfg, Iw, Cw, ia, Ca, *, shift=0, residual=None):
    """``[((n0, n1, k0, k1), program), ...]``: what the host sends for each tile.

    ``program`` holds the host writes (``weights``, ``codebooks``,
    ``act_codebook``), the input beats of each token (``vectors``), the
    outlier beats of each token (``outliers``, None when the unit has no
    outlier capacity) and the tile's operands (``operands``).
    """
    Iw, Cw, ia, Ca = (torch.as_tensor(t).long() for t in (Iw, Cw, ia, Ca))
    check_config_operands(cfg, Iw, Cw, ia, Ca, shift, residual)
    N, K = Iw.shape
    T = len(ia)
    r = torch.zeros_like(ia) if residual is None else torch.as_tensor(residual).long()
    out = []
    for n0, n1, k0, k1 in tiles(cfg, N, K):
        out.append(((n0, n1, k0, k1), {
            "weights": weight_writes(cfg, Iw[n0:n1, k0:k1]),
            "codebooks": codebook_writes(cfg, Cw[n0:n1]),
            "act_codebook": act_codebook_writes(cfg, Ca, shift),
            "vectors": [input_beats(cfg, ia[t, k0:k1]) for t in range(T)],
            "outliers": ([outlier_beats(cfg, r[t, k0:k1]) for t in range(T)]
                         if cfg.outliers else None),
            "operands": (Iw[n0:n1, k0:k1], Cw[n0:n1], ia[:, k0:k1], Ca, shift, r[:, k0:k1]),
        }))
    return out


def assemble(cfg, N, T, results):
    """Add up the tiles' results ``[((n0, n1, k0, k1), [[L results] per token]), ...]``."""
    y = torch.zeros(T, N, dtype=torch.long)
    for (n0, n1, k0, k1), out in results:
        if len(out) != T:
            raise ValueError(f"{cfg.UNIT}: tile ({n0}:{n1}, {k0}:{k1}) returned {len(out)} "
                             f"results for {T} tokens")
        y[:, n0:n1] += torch.tensor([row[:n1 - n0] for row in out], dtype=torch.long)
    return y


def run_tiled(cfg, Iw, Cw, ia, Ca, *, shift=0, residual=None, run_tile):
    """Run a whole layer tile by tile; ``y`` (tokens, N) int64.

    ``run_tile(program)`` runs one tile (see :func:`tile_programs`) on the unit
    or a model of it and returns one list of L results per token.
    """
    programs = tile_programs(cfg, Iw, Cw, ia, Ca, shift=shift, residual=residual)
    results = [(tile, run_tile(program)) for tile, program in programs]
    return assemble(cfg, len(Iw), len(ia), results)


def real_layer_operands(*, layer=2, name="ffn_in", rows=8, tokens=3, k=8, bw=4, ba=4,
                        sentences=12):
    """Integer operands of a real all-MiniLM-L6-v2 linear layer: the first ``rows`` output
    channels of ``layer.name`` quantized with K-Means (``bw`` bits), times ``tokens``
    real token activations of that layer's input, quantized with its K-Means codebook
    (``ba`` bits) and ``k`` outliers per side.  Returns ``(Iw, Cw, ia, Ca, shift, residual)``.
    """

    m = load_minilm()
    W = m.weight(layer, name)
    full = f"layer{layer}.{name}"
    captured = {}

    class Capture(Hooks):
        def begin(self, batch):
            self.mask = batch.attention_mask.bool()

        def linear(self, lname, act, x, weight, bias):
            if lname == full:
                captured["x"] = x[self.mask]
            return super().linear(lname, act, x, weight, bias)

    m.embed(calibration_sentences(sentences), Capture())
    x = captured["x"]
    cb = fit_weight_codebook(W[:rows], bw, name=full)
    act = fit_activation_codebook(x, ba, k=k, name=f"{full} input")
    xi, ia, mask = act.quantize(x[:tokens], k)
    residual = torch.where(mask, xi - (act.Ca[ia] << act.shift), 0)
    return cb.Iw, cb.Cw, ia, act.Ca, act.shift, residual


# ------------------------------------------------------------------ cycles
#
# What a layer costs on the unit, cycle for cycle, as the host driver above runs it: for
# each tile, the host writes (one per cycle, no handshake on the write ports; the unit
# registers them, so each lands one cycle later, yet the first beat may follow the last write
# in the next cycle, no idle cycle between), then the tile's token vectors stream through.  The weight memory holds one tile, so the writes
# and the stream of a tile do not overlap.

__all__ += ["host_write_cycles", "stream_schedule", "stream_cycles", "layer_cycles"]


def host_write_cycles(cfg, K):
    """Host writes of one tile of ``K`` columns, one per cycle as :func:`tile_programs` lists
    them: ``outputs x ceil(K / P)`` index rows, ``outputs x 2**bw`` weight centroids and
    ``2**ba`` activation centroids."""
    return cfg.outputs * -(-K // cfg.elems) + cfg.outputs * 2 ** cfg.bw + 2 ** cfg.ba


def stream_schedule(cfg, beats, tails):
    """Cycle of each vector's first beat and of its result, first beat of the stream at 0.

    ``beats[t]``: beats of vector t; ``tails[t]``: its tail operations
    (:meth:`base.config.ImuConfig.tail_ops`).  The input always offers a beat,
    the outlier beats wait, the output never stalls.  The unit's rules
    (docs/ARCHITECTURE.md): a vector's beats are taken on consecutive cycles;
    the tail starts vector t ``d`` cycles after its last beat or when it has
    finished vector t - 1, whichever is later, and has read vector t's bank
    ``combine_ops - 1`` cycles after that start; vector t may start only
    after the tail has read the bank of vector t - 2; a result leaves
    ``latency - d`` cycles after the tail's last operation on it.  ``d`` follows
    from the stated streaming condition ``B >= min_beats``:
    ``d = min_beats - combine_ops + 1``.
    """
    if len(beats) != len(tails) or not beats:
        raise ValueError(f"{cfg.UNIT}: stream_schedule needs one tail count per vector, got "
                         f"{len(beats)} vectors and {len(tails)} tail counts")
    C = cfg.combine_ops
    d = cfg.min_beats - C + 1
    first, result, start, read = [], [], [], []
    for t, (B, T) in enumerate(zip(beats, tails)):
        a = 0 if t == 0 else first[-1] + beats[t - 1]
        if t >= 2:
            a = max(a, read[t - 2] + 1)
        c = a + B - 1 + d
        if t:
            c = max(c, start[-1] + tails[t - 1])
        first.append(a)
        start.append(c)
        read.append(c + C - 1)
        result.append(c + T - 1 + cfg.latency - d)
    return first, result


def stream_cycles(cfg, beats, tails):
    """Cycles from a tile's first accepted beat to its last result, both counted."""
    return stream_schedule(cfg, beats, tails)[1][-1] + 1


def layer_cycles(cfg, N, K, tails):
    """Cycles of an ``N x K`` layer for the tokens whose tail operations per tile are
    ``tails[tile][token]`` (tiles in :func:`tiles` order): each tile's host writes, then its
    stream."""
    spans = tiles(cfg, N, K)
    if len(tails) != len(spans):
        raise ValueError(f"{cfg.UNIT}: a {N} x {K} layer has {len(spans)} tiles, got tail "
                         f"counts for {len(tails)}")
    total = 0
    for (n0, n1, k0, k1), tt in zip(spans, tails):
        B = -(-(k1 - k0) // cfg.elems)
        total += host_write_cycles(cfg, k1 - k0) + stream_cycles(cfg, [B] * len(tt), tt)
    return total
