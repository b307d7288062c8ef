"""Integer reference of the Index MatMul unit (IMU) and its dequantize-and-multiply baseline.

Both compute, for tokens t and output channels n (DESIGN §2),

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
