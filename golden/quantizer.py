"""Golden twin of :mod:`hdl.quantizer`: online activation quantization by thresholds.

Contract (docs/ARCHITECTURE.md): the index of a signed fixed-point value ``x`` is the
number of thresholds ``t_j <= x``.  The thresholds come from the sorted
activation centroids expressed in ``x``'s fixed-point units as
``t_j = ceil((c_j + c_{j+1}) / 2)``, which gives the exact nearest centroid,
an exact tie going to the upper one.
"""

import torch

from base.config import QuantizerConfig

__all__ = ["thresholds_from_codebook", "quantize", "nearest_centroid", "threshold_writes"]


def _as_int_tensor(values, name):
    t = torch.as_tensor(values)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64)


def thresholds_from_codebook(centroids):
    """Thresholds ``ceil((c_j + c_{j+1}) / 2)`` of sorted integer ``centroids``.

    Raises ``ValueError`` if the centroids are not sorted ascending.
    """
    c = _as_int_tensor(centroids, "centroids").flatten()
    if c.numel() < 2:
        raise ValueError(f"a codebook needs at least 2 centroids, got {c.numel()}")
    if bool((c[1:] < c[:-1]).any()):
        raise ValueError("centroids must be sorted ascending")
    s = c[:-1] + c[1:]
    return torch.div(s + 1, 2, rounding_mode="floor")  # ceil(s / 2) for integers


def quantize(x, thresholds):
    """Index of every element of ``x``: the number of thresholds ``<= x``."""
    x = _as_int_tensor(x, "x")
    t = _as_int_tensor(thresholds, "thresholds").flatten()
    if bool((t[1:] < t[:-1]).any()):
        raise ValueError("thresholds must be sorted ascending")
    return torch.searchsorted(t, x.contiguous(), right=True)


def nearest_centroid(x, centroids):
    """Index of the nearest centroid by brute force, exact ties to the upper one.

    An independent statement of what :func:`quantize` with
    :func:`thresholds_from_codebook` must give; used to check the two.
    """
    x = _as_int_tensor(x, "x")
    c = _as_int_tensor(centroids, "centroids").flatten()
    d = (x.unsqueeze(-1) - c).abs()
    # among minimal distances take the largest index (the upper centroid)
    best = d.min(dim=-1, keepdim=True).values
    idx = torch.arange(c.numel()).expand_as(d)
    return torch.where(d == best, idx, -1).max(dim=-1).values


def threshold_writes(config: QuantizerConfig, thresholds):
    """The host's ``(address, value)`` writes that load ``thresholds`` into the unit.

    This is the golden host driver's only way to program the quantizer: it
    refuses thresholds of the wrong count, out of the input range or not
    sorted ascending, since the hardware's binary search is only exact on
    sorted thresholds.
    """
    t = _as_int_tensor(thresholds, "thresholds").flatten()
    if t.numel() != config.n_thresholds:
        raise ValueError(f"quantizer with ba={config.ba} needs {config.n_thresholds} "
                         f"thresholds, got {t.numel()}")
    lo, hi = -(1 << (config.width - 1)), (1 << (config.width - 1)) - 1
    if bool(((t < lo) | (t > hi)).any()):
        raise ValueError(f"thresholds must lie in the {config.width}-bit signed range "
                         f"{lo}..{hi}")
    if bool((t[1:] < t[:-1]).any()):
        raise ValueError("refusing to write unsorted thresholds: they must be sorted ascending")
    return [(j, int(v)) for j, v in enumerate(t.tolist())]
