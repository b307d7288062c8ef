"""The golden quantizer: thresholds give the exact nearest centroid, ties to the upper one."""

import random

import pytest
import torch

from golden.quantizer import nearest_centroid, quantize, threshold_writes, thresholds_from_codebook
from base.config import QuantizerConfig


def test_thresholds_are_ceil_of_midpoints():
    assert thresholds_from_codebook([-10, -3, 4, 4, 100]).tolist() == [-6, 1, 4, 52]
    # -13 / 2 = -6.5 -> -6; 1 / 2 = 0.5 -> 1; an even sum is exact
    assert thresholds_from_codebook([-7, -6]).tolist() == [-6]
    assert thresholds_from_codebook([0, 1]).tolist() == [1]


def test_exhaustive_small_range_equals_brute_force():
    """Distinct centroids: the same index.  Repeated centroids (integer rounding can
    merge two) make the index ambiguous, but the chosen centroid value is the same."""
    rng = random.Random(0)
    x = torch.arange(-128, 128)
    distinct = 0
    for _ in range(300):
        n = rng.choice([2, 4, 8, 16])
        c = sorted(rng.randint(-128, 127) for _ in range(n))
        got = quantize(x, thresholds_from_codebook(c))
        ref = nearest_centroid(x, c)
        assert torch.equal(torch.tensor(c)[got], torch.tensor(c)[ref]), c
        if len(set(c)) == len(c):
            distinct += 1
            assert torch.equal(got, ref), c
    assert distinct > 100


def test_exact_tie_goes_to_upper_centroid():
    c = [0, 10]
    assert quantize(torch.tensor([4, 5, 6]), thresholds_from_codebook(c)).tolist() == [0, 1, 1]


def test_index_counts_thresholds_at_or_below():
    t = torch.tensor([-5, 0, 0, 7])
    x = torch.tensor([-6, -5, -1, 0, 6, 7, 1000])
    assert quantize(x, t).tolist() == [0, 1, 1, 3, 3, 4, 4]


def test_unsorted_input_refused():
    with pytest.raises(ValueError, match="centroids must be sorted ascending"):
        thresholds_from_codebook([3, 1, 2])
    with pytest.raises(ValueError, match="thresholds must be sorted ascending"):
        quantize(torch.tensor([0]), torch.tensor([2, 1]))
    with pytest.raises(TypeError, match="centroids must hold integers"):
        thresholds_from_codebook([0.5, 1.5])


def test_driver_writes_and_refusals():
    cfg = QuantizerConfig(width=8, ba=2, elems=1)
    assert threshold_writes(cfg, [-3, 0, 5]) == [(0, -3), (1, 0), (2, 5)]
    with pytest.raises(ValueError, match="refusing to write unsorted thresholds"):
        threshold_writes(cfg, [0, -3, 5])
    with pytest.raises(ValueError, match="needs 3 thresholds, got 2"):
        threshold_writes(cfg, [0, 1])
    with pytest.raises(ValueError, match="8-bit signed range -128..127"):
        threshold_writes(cfg, [0, 1, 128])
