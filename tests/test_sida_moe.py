"""The MoE made from MiniLM: balanced split, routing rule, exactness against the dense FFN."""

import math

import pytest
import torch

from golden.minilm import Hooks, load_minilm
from golden.moe import MoEHooks, MoESplit, balanced_kmeans, expert_scores, route


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def test_balanced_kmeans_equal_sizes_and_recovers_blobs():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 8, generator=g) * 10
    X = torch.cat([c + 0.1 * torch.randn(12, 8, generator=g) for c in centers])   # 4 blobs of 12
    groups = balanced_kmeans(X, 4, seed=0)
    assert groups.shape == (4, 12)
    assert sorted(groups.flatten().tolist()) == list(range(48))                    # a partition
    # every cluster is exactly one blob
    assert sorted(sorted(set((groups[c] // 12).tolist())) for c in range(4)) == [[0], [1], [2], [3]]


def test_balanced_kmeans_balances_skewed_data():
    g = torch.Generator().manual_seed(2)
    X = torch.cat([torch.randn(40, 3, generator=g), 50 + torch.randn(8, 3, generator=g)])
    groups = balanced_kmeans(X, 6)
    assert groups.shape == (6, 8)
    assert sorted(groups.flatten().tolist()) == list(range(48))


def test_balanced_kmeans_rejects_uneven_split():
    with pytest.raises(ValueError, match="10 rows cannot be split into 3 equal clusters"):
        balanced_kmeans(torch.randn(10, 2), 3)


def test_routing_scores_match_explicit_expert_outputs():
    g = torch.Generator().manual_seed(3)
    hidden, d, E = 24, 5, 4
    groups = torch.randperm(hidden, generator=g).view(E, hidden // E)
    W2 = torch.randn(d, hidden, generator=g)
    gl = _gelu(torch.randn(7, hidden, generator=g))
    norm = expert_scores(gl, W2, groups, "norm")
    gel = expert_scores(gl, W2, groups, "gelu")
    for t in range(7):
        for e in range(E):
            S = groups[e]
            y = sum(W2[:, n] * gl[t, n] for n in S.tolist())       # the expert's contribution
            assert norm[t, e] == pytest.approx(float(y.norm()), rel=1e-5)
            assert gel[t, e] == pytest.approx(float(gl[t, S].abs().sum()), rel=1e-5)
    top = route(norm, 2)
    for t in range(7):
        ranked = sorted(range(E), key=lambda e: -float(norm[t, e]))
        assert top[t].tolist() == ranked[:2]
    with pytest.raises(ValueError, match="top-k must be in 1..4, got 5"):
        route(norm, 5)
    with pytest.raises(ValueError, match="unknown routing rule 'max'"):
        expert_scores(gl, W2, groups, "max")


@pytest.fixture(scope="module")
def model():
    return load_minilm()


@pytest.fixture(scope="module")
def split(model):
    g = torch.Generator().manual_seed(0)
    return MoESplit(tuple(torch.randperm(1536, generator=g).view(16, 96).sort(1).values
                          for _ in range(model.layers)))


SENTENCES = ["The module provides a way to read configuration files.",
             "Return a new list containing all items from the iterable in ascending order.",
             "Short text."]


def test_moe_with_all_experts_equals_dense(model, split):
    dense = model.embed(SENTENCES)
    moe = model.embed(SENTENCES, MoEHooks(model, split, k=16))
    assert torch.allclose(moe, dense, atol=1e-6, rtol=0)


class _Capture(Hooks):
    """Dense FFN inputs of one layer, to recompute the MoE by hand."""

    def __init__(self):
        self.pre = {}

    def begin(self, batch):
        self.mask = batch.attention_mask.bool()

    def gelu(self, name, x):
        self.pre[name] = x[self.mask].clone()
        return super().gelu(name, x)


def test_moe_layer_equals_sum_of_selected_expert_ffns(model, split):
    """One MoE layer == W2 restricted to the chosen experts' neurons, computed expert by expert."""
    cap = _Capture()
    batch = model.tokenize(SENTENCES)
    model.hidden_states(batch, cap)
    a = cap.pre["layer2.gelu"]                              # (n, 1536) real tokens
    hooks = MoEHooks(model, split, k=2)
    hooks.begin(batch)
    full = torch.zeros(*batch.input_ids.shape, 1536)
    full[batch.attention_mask.bool()] = a
    mid = hooks.gelu("layer2.gelu", full)[batch.attention_mask.bool()]
    W2 = model.weight(2, "ffn_out")
    experts = hooks.records[2]["experts"]
    g = _gelu(a)
    for t in range(0, a.shape[0], 5):
        want = sum(W2[:, split.groups[2][e]] @ g[t, split.groups[2][e]] for e in experts[t].tolist())
        assert torch.allclose(W2 @ mid[t], want, atol=1e-4)
        # the chosen experts are the two with the largest contribution norms
        norms = [float((W2[:, S] @ g[t, S]).norm()) for S in split.groups[2]]
        assert set(experts[t].tolist()) == set(sorted(range(16), key=lambda e: -norms[e])[:2])


def test_fingerprint_changes_with_split(split):
    other = MoESplit((split.groups[1],) + split.groups[1:])
    assert split.fingerprint() != other.fingerprint()
    assert split.experts == 16 and split.neurons == 96 and split.layers == 6


def test_quantized_expert_size_and_fidelity(model, split):
    from golden.sida import quantize_experts
    ew = quantize_experts(model, split, layers=[1], experts=[3])[1, 3]
    S = split.groups[1][3]
    assert ew.w_in.Iw.shape == (96, 384) and ew.w_out.Iw.shape == (384, 96)
    # 4-bit indices of both matrices + 16 8-bit centroids and a 16-bit scale per output
    # channel (96 + 384 channels) + a 32-bit bias per neuron
    assert ew.nbytes() == 2 * 96 * 384 // 2 + (96 + 384) * 16 + (96 + 384) * 2 + 96 * 4 == 45888
    for wq, w in ((ew.w_in, model.weight(1, "ffn_in")[S]), (ew.w_out, model.weight(1, "ffn_out")[:, S])):
        c = torch.nn.functional.cosine_similarity(wq.dequantize().flatten(), w.flatten(), dim=0)
        assert c > 0.99


class _FakeModel:
    """Two FFN layers of 64 neurons over 8 inputs, with four planted neuron families."""
    layers = 2

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        dirs = torch.randn(4, 8, generator=g)
        self.W1 = [dirs.repeat_interleave(16, 0)[torch.randperm(64, generator=g)]
                   + 0.05 * torch.randn(64, 8, generator=g) for _ in range(2)]

    def weight(self, layer, name):
        assert name == "ffn_in"
        return self.W1[layer]


def test_split_model_is_balanced_and_follows_the_weights():
    from golden.moe import split_model
    m = _FakeModel()
    split = split_model(m, 4)
    assert split.layers == 2 and split.experts == 4 and split.neurons == 16
    for layer, groups in enumerate(split.groups):
        assert sorted(groups.flatten().tolist()) == list(range(64))
        W = torch.nn.functional.normalize(m.W1[layer], dim=1)
        for g in groups:                        # each expert is one planted family
            assert (W[g] @ W[g].T).min() > 0.9
        # expert_of_neuron inverts the groups
        eon = split.expert_of_neuron(layer)
        assert all(int(eon[n]) == e for e, g in enumerate(groups) for n in g.tolist())
    with pytest.raises(ValueError, match="experts must be an integer >= 2 dividing the FFN "
                       "width 64, got 5"):
        split_model(m, 5)
