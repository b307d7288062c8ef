"""A mixture of experts made from the real all-MiniLM-L6-v2 (MoEfication).

Each of the six feed-forward layers ``y = W2 gelu(W1 x + b1) + b2``
(1536 hidden neurons) is split into ``E`` experts of ``1536 / E`` neurons
each by **balanced clustering of the neurons** (the parameter-clustering
split of MoEfication, Zhang et al., Findings of ACL 2022): each neuron is
represented by its L2-normalized input weight row ``W1[n]``, and a balanced
K-Means puts exactly ``1536 / E`` neurons into every cluster.  Expert ``e``
of a layer is the sub-FFN ``W2[:, S_e] gelu(W1[S_e] x + b1[S_e])``; the sum
of all experts plus ``b2`` is the dense FFN, exactly.

**Routing rule (the true router).** For a token with hidden pre-activations
``a = W1 x + b1`` and GELU outputs ``g = gelu(a)``, expert ``e``'s
contribution to the FFN output is ``y_e = W2[:, S_e] g[S_e]``.  The token's
score for expert ``e`` is ``||y_e||_2`` and it is routed to the ``k``
experts with the largest scores.  Rationale: the MoE output is the dense
output minus the dropped experts' contributions, so keeping the experts
whose contributions are largest in norm keeps the error small.  A cheaper
rule, the sum of ``|g|`` over the expert's neurons (``rule="gelu"``), is
kept for comparison; ``kllm sida`` reports both, measured (docs/RESULTS.md).
The scores need the whole dense FFN hidden layer, so this rule is an ideal
router that defines the true routing; a deployed MoE would learn a small
gate to imitate it (MoEfication does), and the SiDA predictor
(golden/sida.py) imitates it from token embeddings alone.

:class:`MoEHooks` runs the model with the MoE in place of every FFN: at the
GELU it routes each real token, zeroes the neurons of unselected experts
(exactly the output of running only the selected experts), and records the
routing; or it follows a routing given from outside (hash-routed mode).
"""

import hashlib
from dataclasses import dataclass

import torch

from golden.minilm import Hooks

__all__ = ["MoESplit", "balanced_kmeans", "split_model", "expert_scores", "route", "MoEHooks",
           "moe_embed", "cosine", "quality", "RULES"]

RULES = ("norm", "gelu")


def balanced_kmeans(X, clusters, *, iters=10, seed=0):
    """Cluster the rows of ``X`` (n, d) into ``clusters`` groups of exactly ``n / clusters``.

    K-Means with a balanced assignment step: all (row, centroid) pairs are
    taken in order of increasing distance and a row goes to the first
    centroid that still has room (a greedy solution of the balanced
    assignment).  Returns ``(clusters, n / clusters)`` row indices, each
    group sorted.
    """
    n = X.shape[0]
    if clusters < 1 or n % clusters:
        raise ValueError(f"balanced_kmeans: {n} rows cannot be split into {clusters} equal "
                         f"clusters")
    size = n // clusters
    X = X.double()
    g = torch.Generator().manual_seed(seed)
    centroids = X[torch.randperm(n, generator=g)[:clusters]].clone()
    labels = None
    for _ in range(iters):
        d = torch.cdist(X, centroids)                       # (n, clusters)
        order = torch.argsort(d.flatten(), stable=True)
        new = torch.full((n,), -1, dtype=torch.long)
        room = [size] * clusters
        placed = 0
        for flat in order.tolist():
            r, c = divmod(flat, clusters)
            if new[r] >= 0 or room[c] == 0:
                continue
            new[r] = c
            room[c] -= 1
            placed += 1
            if placed == n:
                break
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        for c in range(clusters):
            centroids[c] = X[labels == c].mean(0)
    return torch.stack([torch.nonzero(labels == c).flatten() for c in range(clusters)])


@dataclass(frozen=True)
class MoESplit:
    """The experts of every FFN layer: ``groups[layer]`` is (E, neurons per expert)."""
    groups: tuple           # per layer: LongTensor (E, n_e)
    model_id: str = "all-MiniLM-L6-v2"

    @property
    def layers(self):
        return len(self.groups)

    @property
    def experts(self):
        return self.groups[0].shape[0]

    @property
    def neurons(self):
        """Neurons per expert."""
        return self.groups[0].shape[1]

    def fingerprint(self):
        """A short hash of the neuron assignment (the predictor is tied to it)."""
        h = hashlib.sha256(self.model_id.encode())
        for g in self.groups:
            h.update(g.to(torch.int32).numpy().tobytes())
        return h.hexdigest()[:16]

    def expert_of_neuron(self, layer):
        """(hidden,) expert index of every FFN neuron of ``layer``."""
        g = self.groups[layer]
        out = torch.empty(g.numel(), dtype=torch.long)
        out[g.flatten()] = torch.arange(g.shape[0]).repeat_interleave(g.shape[1])
        return out


def split_model(model, experts=16, *, seed=0):
    """Split every FFN of ``model`` into ``experts`` balanced clusters of neurons."""
    hidden = model.weight(0, "ffn_in").shape[0]
    if not isinstance(experts, int) or experts < 2 or hidden % experts:
        raise ValueError(f"experts must be an integer >= 2 dividing the FFN width {hidden}, "
                         f"got {experts!r}")
    groups = []
    for layer in range(model.layers):
        W1 = model.weight(layer, "ffn_in")
        feats = torch.nn.functional.normalize(W1, dim=1)
        groups.append(balanced_kmeans(feats, experts, seed=seed + layer))
    return MoESplit(tuple(groups))


def expert_scores(g, W2, groups, rule="norm"):
    """Routing scores (tokens, E) from GELU outputs ``g`` (tokens, hidden)."""
    if rule == "norm":
        # y_e = W2[:, S_e] g[S_e]: (tokens, E, d)
        gs = g[:, groups]                                   # (T, E, n_e)
        W2s = W2[:, groups].permute(1, 2, 0)                # (E, n_e, d)
        y = torch.einsum("ten,end->ted", gs, W2s)
        return y.norm(dim=-1)
    if rule == "gelu":
        return g.abs()[:, groups].sum(-1)
    raise ValueError(f"unknown routing rule {rule!r} (rules: {', '.join(RULES)})")


def route(scores, k):
    """Top-``k`` experts per token: (tokens, k) indices, largest score first."""
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"top-k must be in 1..{scores.shape[-1]}, got {k}")
    return scores.topk(k, dim=-1).indices


class MoEHooks(Hooks):
    """Run :class:`golden.minilm.MiniLM` with every FFN as an MoE.

    Parameters
    ----------
    split : MoESplit
    k : int
        experts per token (ignored when ``routing`` is given).
    rule : str
        routing rule of the true router, see the module docstring.
    routing : callable, optional
        ``routing(batch) -> LongTensor (B, T, layers, k')``: the experts each
        token uses at each layer, decided outside (hash-routed mode).

    After each forward pass, ``self.records`` holds per layer a dict with the
    real tokens' ``scores`` (n, E) and ``experts`` (n, k) actually used.
    """

    def __init__(self, model, split, k=2, rule="norm", routing=None):
        if rule not in RULES:
            raise ValueError(f"unknown routing rule {rule!r} (rules: {', '.join(RULES)})")
        route(torch.zeros(1, split.experts), k)        # checks k
        self.model, self.split, self.k, self.rule, self.routing = model, split, k, rule, routing
        self.records = []
        self._W2 = [model.weight(i, "ffn_out") for i in range(model.layers)]

    def begin(self, batch):
        self.mask = batch.attention_mask.bool()
        self.given = self.routing(batch) if self.routing is not None else None
        self.records = [None] * self.model.layers

    def gelu(self, name, x):
        g = super().gelu(name, x)
        layer = int(name.split(".")[0][len("layer"):])
        groups = self.split.groups[layer]
        flat = g[self.mask]                                 # real tokens only (n, hidden)
        scores = expert_scores(flat, self._W2[layer], groups, self.rule)
        if self.given is not None:
            experts = self.given[:, :, layer][self.mask]
        else:
            experts = route(scores, self.k)
        keep = torch.zeros(flat.shape[0], self.split.experts, dtype=torch.bool)
        keep.scatter_(1, experts, True)
        neuron_keep = keep[:, self.split.expert_of_neuron(layer)]
        out = torch.zeros_like(g)
        out[self.mask] = flat * neuron_keep
        self.records[layer] = {"scores": scores, "experts": experts}
        return out


def moe_embed(model, sentences, hooks, batch_size=64):
    """Sentence embeddings with ``hooks`` (like ``model.embed``) and the per-sentence records.

    Returns ``(embeddings, records)`` where ``records[i][layer]`` holds the
    scores and experts of sentence ``i``'s real tokens (in token order).
    """
    sentences = list(sentences)
    out = torch.zeros(len(sentences), model.hidden)
    records = [None] * len(sentences)
    lengths = [len(e.ids) for e in model.tokenizer.encode_batch(sentences)]
    order = sorted(range(len(sentences)), key=lambda i: lengths[i])
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        batch = model.tokenize([sentences[i] for i in chunk])
        x = model.hidden_states(batch, hooks)
        m = batch.attention_mask[..., None].float()
        out[chunk] = torch.nn.functional.normalize((x * m).sum(1) / m.sum(1), dim=-1)
        n_tok = batch.attention_mask.sum(1).tolist()
        starts = [0] + list(torch.tensor(n_tok).cumsum(0)[:-1].tolist())
        for j, i in enumerate(chunk):
            records[i] = [{key: r[key][starts[j]:starts[j] + n_tok[j]] for key in r}
                          for r in hooks.records]
    return out, records


def cosine(a, b):
    return (torch.nn.functional.normalize(a, dim=-1)
            * torch.nn.functional.normalize(b, dim=-1)).sum(-1)


def quality(model, split, sentences, ks=(1, 2, 4), rules=RULES):
    """Mean / min cosine of MoE sentence embeddings to the dense model, per rule and k."""
    dense = model.embed(sentences)
    rows = []
    for rule in rules:
        for k in ks:
            emb, _ = moe_embed(model, sentences, MoEHooks(model, split, k=k, rule=rule))
            c = cosine(emb, dense)
            rows.append({"rule": rule, "k": k, "cos_mean": float(c.mean()),
                         "cos_min": float(c.min()), "active": k / split.experts})
    return rows
