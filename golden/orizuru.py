"""Golden twin of :mod:`hdl.orizuru`: the k largest and k smallest values of a vector.

Contract (numeric contract in docs/ARCHITECTURE.md, outliers): for each vector ``x[0 .. n-1]`` of signed
integers, return

* ``top``: the ``min(k, n)`` largest values with their positions, largest
  first;
* ``bot``: the ``min(k, n)`` smallest values with their positions, smallest
  first;

and among equal values the **lower position wins** (comes first, and is the
one kept when only some of the equal values fit).  The two sides are
independent: when ``n < 2k`` an element can be in both lists, and when
``n < k`` each list has only ``n`` entries.  The hardware pads both lists to
``k`` entries with empty ones, ``(value 0, position 0, valid 0)``
(:func:`result`).

An empty vector (``n = 0``) gives two empty lists.  Vectors longer than the
unit's ``max_len`` are outside the contract: :func:`result` refuses them.
"""

import torch

from base.config import OrizuruConfig
from golden.minilm import Hooks, load_minilm
from golden.text import calibration_sentences

__all__ = ["topk", "topk_reference", "result", "EMPTY"]

#: An unused output entry: ``(value, position, valid)``.
EMPTY = (0, 0, 0)


def _as_vector(values):
    t = torch.as_tensor(values)
    if t.numel() == 0:
        return t.reshape(0).to(torch.int64)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"values must hold integers, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"values must be one vector, got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def topk(values, k):
    """``(top, bot)``: lists of ``(value, position)``, best first, lower position wins ties.

    A stable sort keeps equal values in position order, so the first ``k`` of
    the stable descending (ascending) order are the ``k`` largest (smallest)
    with the tie rule of the contract.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    x = _as_vector(values)
    out = []
    for descending in (True, False):
        v, i = torch.sort(x, descending=descending, stable=True)
        out.append(list(zip(v[:k].tolist(), i[:k].tolist())))
    return tuple(out)


def topk_reference(values, k):
    """The same as :func:`topk`, stated independently (a plain key sort), for checking it."""
    x = [int(v) for v in values]
    top = sorted(range(len(x)), key=lambda p: (-x[p], p))[:k]
    bot = sorted(range(len(x)), key=lambda p: (x[p], p))[:k]
    return [(x[p], p) for p in top], [(x[p], p) for p in bot]


def result(config: OrizuruConfig, values):
    """The unit's result beat for one vector: ``{"top": [...], "bot": [...]}``.

    Each list has exactly ``k`` entries ``(value, position, valid)``, the
    unused ones :data:`EMPTY`.  Values must fit the unit's signed width and
    the vector its ``max_len``.
    """
    x = _as_vector(values)
    if x.numel() > config.max_len:
        raise ValueError(f"a vector of {x.numel()} values is longer than max_len="
                         f"{config.max_len}")
    lo, hi = -(1 << (config.width - 1)), (1 << (config.width - 1)) - 1
    if x.numel() and bool(((x < lo) | (x > hi)).any()):
        raise ValueError(f"values must lie in the {config.width}-bit signed range {lo}..{hi}")
    top, bot = topk(x, config.k)
    pad = [EMPTY] * config.k
    return {"top": ([(v, p, 1) for v, p in top] + pad)[:config.k],
            "bot": ([(v, p, 1) for v, p in bot] + pad)[:config.k]}


def real_vectors(width, max_len, n=24, sentences=2):
    """Token vectors of real activations, in a ``width``-bit signed fixed point.

    The inputs of MiniLM's linear layers (every layer's attention, FFN-in and
    FFN-out inputs) for the first ``sentences`` calibration sentences
    (:mod:`golden.text`), each layer input scaled so its largest magnitude is
    the largest ``width``-bit value (the quantizer's fixed point without
    headroom), then cut to its first ``max_len`` channels.  ``n`` vectors,
    taken round-robin over the layer inputs so every kind appears.  These
    vectors carry the real outlier structure: a few channels of every token
    far out of the bulk, and the GELU outputs' long positive tail.
    """

    got = {}

    class Capture(Hooks):
        def begin(self, batch):
            self.mask = batch.attention_mask.bool()

        def linear(self, name, act, x, weight, bias):
            got.setdefault(act, x[self.mask])
            return super().linear(name, act, x, weight, bias)

    load_minilm().embed(calibration_sentences(sentences), Capture())
    qmax = (1 << (width - 1)) - 1
    per_input = []
    for v in got.values():
        v = v.double()
        scale = float(v.abs().max()) / qmax
        per_input.append(torch.round(v / scale).clamp(-qmax, qmax).long()[:, :max_len])
    out = []
    for j in range(n):
        rows = per_input[j % len(per_input)]
        out.append(rows[(j // len(per_input)) % len(rows)].tolist())
    return out
