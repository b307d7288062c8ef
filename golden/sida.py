"""SiDA expert prefetching for the MoE made from MiniLM: predictor, controller, cycle model.

SiDA-MoE (Du et al., "SiDA: Sparsity-Inspired Data-Aware Serving for
Efficient and Scalable Large Mixture-of-Experts Models", MLSys 2024) keeps
every expert in host memory and uses a small offline-trained "hash
function" to predict, from the tokens alone, which experts a batch will
use, so only those sit in device memory.  Here the device memory is the
weight buffer of the Index MatMul unit (IMU).  This module holds:

* :class:`HashPredictor`: token embeddings -> small bidirectional LSTM ->
  one sparsemax self-attention layer (Martins & Astudillo 2016) -> one
  linear head per MoE layer giving expert logits.  Trained offline by
  *truncated knowledge distillation* against the true router
  (:func:`train_predictor`): the teacher distribution over experts is
  truncated to its top ``truncate`` entries and renormalized, and the
  student's cross-entropy to it is minimized.  Saved and reloaded as one
  file with metadata (:func:`save_predictor`, :func:`load_predictor`).
* The cycle model: :func:`imu_cycles` (the RTL IMU's cycles as the golden
  host driver runs a layer: per tile the weight-memory rewrite through the
  host ports, then the tokens' stream, :func:`golden.imu.layer_cycles`) and
  :class:`CycleModel` (IMU configuration + load bandwidth in bytes per
  cycle + expert sizes from the real quantized expert weights).
* :class:`WeightBuffer`: the host-driver interface of the expert buffer in
  front of the IMU (``load`` / ``evict`` / atomic ``load_set``);
  :class:`RecordingBuffer` keeps what was written, and
  :func:`cosim_scenario` builds the real case that the cocotb bench
  testbench/test_sida.py runs on the RTL IMU through its host ports.
* :func:`simulate`: the controller and its baselines over a real routing
  trace, cycle-accounted (see docs/ARCHITECTURE.md, "SiDA expert
  prefetching", for the exact accounting rules).
"""

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from base.config import ImuConfig
from base.errors import KllmError
from golden.imu import index_matmul, layer_cycles, tiles
from golden.moe import MoEHooks, moe_embed
from golden.quant import fit_activation_codebook, fit_weight_codebook
from golden.text import calibration_sentences, evaluation_sentences

__all__ = ["sparsemax", "HashPredictor", "PredictorFileError", "token_embeddings",
           "collect_routing", "train_predictor", "save_predictor", "load_predictor",
           "read_predictor_file",
           "hit_rates", "imu_cycles", "CycleModel", "ExpertWeights", "quantize_experts",
           "WeightBuffer", "BufferError", "POLICIES", "make_trace", "simulate"]

FORMAT = "kllm-sida-predictor"
VERSION = 1


# ------------------------------------------------------------------ predictor

def sparsemax(z, dim=-1):
    """Euclidean projection of ``z`` onto the probability simplex along ``dim``.

    Like softmax but with exact zeros: ``p = max(z - tau, 0)`` with ``tau``
    chosen so ``p`` sums to 1 (Martins & Astudillo, ICML 2016).
    """
    zs, _ = z.sort(dim=dim, descending=True)
    cs = zs.cumsum(dim) - 1
    shape = [1] * z.dim()
    shape[dim] = -1
    r = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype, device=z.device).view(shape)
    support = (zs * r > cs).sum(dim=dim, keepdim=True)
    tau = cs.gather(dim, support - 1) / support.to(z.dtype)
    return (z - tau).clamp(min=0)


class PredictorFileError(KllmError):
    """A predictor file that cannot be used with this model / MoE split."""


class HashPredictor(torch.nn.Module):
    """Expert logits of every MoE layer from token embeddings only.

    ``forward(emb, mask) -> (B, T, layers, experts)``; ``emb`` (B, T, dim)
    are the model's embedding-layer outputs (word + position + type,
    LayerNorm: table lookups, no transformer layer runs).
    """

    def __init__(self, layers, experts, dim=384, hidden=128):
        super().__init__()
        if hidden < 2 or hidden % 2:
            raise ValueError(f"predictor hidden size must be even and >= 2, got {hidden}")
        self.layers, self.experts, self.dim, self.hidden = layers, experts, dim, hidden
        self.proj = torch.nn.Linear(dim, hidden)
        self.lstm = torch.nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.q = torch.nn.Linear(hidden, hidden)
        self.k = torch.nn.Linear(hidden, hidden)
        self.v = torch.nn.Linear(hidden, hidden)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, experts) for _ in range(layers))

    def forward(self, emb, mask):
        lengths = mask.sum(1).clamp(min=1).cpu()
        h = torch.tanh(self.proj(emb))
        packed = torch.nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True,
                                                         enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=emb.shape[1])
        scores = self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(self.hidden)
        scores = scores.masked_fill(~mask.bool()[:, None, :], -1e4)
        h = h + sparsemax(scores, dim=-1) @ self.v(h)
        return torch.stack([head(h) for head in self.heads], dim=2)

    def route(self, emb, mask, k):
        """Predicted top-``k`` experts (B, T, layers, k)."""
        with torch.no_grad():
            return self(emb, mask).topk(k, dim=-1).indices


def token_embeddings(model, batch):
    """The embedding-layer output of ``batch`` (B, T, dim): lookups + LayerNorm only."""
    t = model.t
    T = batch.input_ids.shape[1]
    x = (t["embeddings.word_embeddings.weight"][batch.input_ids]
         + t["embeddings.position_embeddings.weight"][:T]
         + t["embeddings.token_type_embeddings.weight"][batch.token_type_ids])
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), t["embeddings.LayerNorm.weight"],
                                          t["embeddings.LayerNorm.bias"], model.eps)


def collect_routing(model, split, sentences, k, rule="norm"):
    """True routing of real text: per sentence, scores (layers, n, E) and experts (layers, n, k).

    The MoE runs with the true router at every layer, so layer ``l``'s
    routing sees the MoE outputs of layers ``< l`` (what exact mode runs).
    Also returns the MoE's sentence embeddings.
    """
    emb, records = moe_embed(model, sentences, MoEHooks(model, split, k=k, rule=rule))
    out = [{"scores": torch.stack([r["scores"] for r in rec]),
            "experts": torch.stack([r["experts"] for r in rec])} for rec in records]
    return out, emb


def _teacher(scores, truncate, temperature):
    """Truncated teacher distribution over experts from routing scores (..., E)."""
    z = torch.log(scores.clamp(min=1e-6)) / temperature
    top = z.topk(truncate, dim=-1)
    p = torch.zeros_like(z)
    p.scatter_(-1, top.indices, torch.softmax(top.values, dim=-1))
    return p


def _batches(model, sentences, routing, size):
    order = sorted(range(len(sentences)), key=lambda i: routing[i]["scores"].shape[1])
    for s in range(0, len(order), size):
        idx = order[s:s + size]
        batch = model.tokenize([sentences[i] for i in idx])
        B, T = batch.input_ids.shape
        L, _, E = routing[idx[0]]["scores"].shape
        scores = torch.ones(B, T, L, E)
        for j, i in enumerate(idx):
            n = routing[i]["scores"].shape[1]
            if n != int(batch.attention_mask[j].sum()):
                raise ValueError("routing records do not match the tokenized sentences")
            scores[j, :n] = routing[i]["scores"].transpose(0, 1)
        yield batch, scores


def train_predictor(model, split, sentences, routing, *, k, hidden=128, epochs=8, truncate=None,
                    temperature=0.25, lr=3e-3, batch_size=32, seed=0, max_seconds=None,
                    progress=None):
    """Fit a :class:`HashPredictor` to the true routing of calibration ``sentences``.

    ``routing`` from :func:`collect_routing` on the same sentences.  Loss:
    cross-entropy of the student's softmax to the teacher's distribution
    truncated to its top ``truncate`` experts (default ``2 * k``).
    """
    truncate = truncate or min(2 * k, split.experts)
    torch.manual_seed(seed)
    net = HashPredictor(split.layers, split.experts, model.hidden, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    data = [(token_embeddings(model, b), b.attention_mask, _teacher(s, truncate, temperature))
            for b, s in _batches(model, sentences, routing, batch_size)]
    t0 = time.time()
    losses = []
    for epoch in range(epochs):
        perm = torch.randperm(len(data)).tolist()
        total = count = 0.0
        for i in perm:
            emb, mask, p = data[i]
            logq = torch.log_softmax(net(emb, mask), dim=-1)
            m = mask.bool()
            loss = -(p[m] * logq[m]).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * int(m.sum())
            count += int(m.sum())
        losses.append(total / count)
        if progress:
            progress(f"predictor epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f} "
                     f"({time.time() - t0:.0f} s)")
        if max_seconds and time.time() - t0 > max_seconds:
            break
    net.eval()
    net.meta = {"k": k, "truncate": truncate, "temperature": temperature, "epochs": len(losses),
                "loss": losses, "train_sentences": len(sentences),
                "train_seconds": round(time.time() - t0, 1)}
    return net


def predict_routing(model, net, sentences, k, batch_size=64):
    """Predicted experts per sentence: (layers, n, k) for each sentence's real tokens."""
    out = [None] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = model.tokenize([sentences[i] for i in idx])
        r = net.route(token_embeddings(model, batch), batch.attention_mask, k)
        for j, i in enumerate(idx):
            n = int(batch.attention_mask[j].sum())
            out[i] = r[j, :n].transpose(0, 1)
    return out


def hit_rates(pred, true):
    """Per-layer top-k hit rate: mean over tokens of |predicted ∩ true| / k.

    ``pred`` and ``true``: lists of (layers, n, k) per sentence.
    """
    L = true[0].shape[0]
    hits = torch.zeros(L)
    n = 0
    for p, t in zip(pred, true):
        same = (p[..., :, None] == t[..., None, :]).any(-1).float()   # (L, n, k)
        hits += same.mean(-1).sum(-1)
        n += t.shape[1]
    return (hits / n).tolist()


def save_predictor(net, path, split, model_id=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "model_id": model_id or split.model_id,
            "split": split.fingerprint(), "experts": net.experts, "layers": net.layers,
            "dim": net.dim, "hidden": net.hidden, "meta": getattr(net, "meta", {}),
            "state_dict": net.state_dict()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def read_predictor_file(path):
    """The stored dict of a predictor file, checked for format and version only.

    Cheap: lets a command refuse a missing or corrupt file before any work.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictorFileError(f"predictor file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PredictorFileError(f"predictor file {path} is corrupt or not a predictor "
                                 f"({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise PredictorFileError(f"predictor file {path} is not a {FORMAT} file")
    if blob.get("version") != VERSION:
        raise PredictorFileError(f"predictor file {path} has format version "
                                 f"{blob.get('version')}, expected {VERSION}")
    return blob


def load_predictor(path, split):
    """Load a predictor saved by :func:`save_predictor` for the MoE ``split``.

    Raises :class:`PredictorFileError` (one line, naming the file and the
    mismatch) for a missing, corrupt or foreign file, or one made for
    another model, expert count, layer count or neuron split.
    """
    path = Path(path)
    blob = read_predictor_file(path)
    for key, want in (("model_id", split.model_id), ("experts", split.experts),
                      ("layers", split.layers), ("split", split.fingerprint())):
        if blob.get(key) != want:
            raise PredictorFileError(f"predictor file {path} was made for {key} "
                                     f"{blob.get(key)!r}, this MoE has {key} {want!r}")
    try:
        net = HashPredictor(blob["layers"], blob["experts"], blob["dim"], blob["hidden"])
        net.load_state_dict(blob["state_dict"])
    except Exception as e:
        raise PredictorFileError(f"predictor file {path} holds unusable weights "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    net.eval()
    net.meta = blob.get("meta", {})
    return net


# ---------------------------------------------------------------- cycle model

#: The IMU the cycle model stands for by default: 16 output channels x 4 elements per beat.
DEFAULT_IMU = ImuConfig(outputs=16, elems=4)


@functools.lru_cache(maxsize=4096)
def imu_cycles(n, k, tokens=1, *, imu=DEFAULT_IMU, shift=0, outlier_beats=16):
    """Cycles of the RTL IMU (hdl/imu.py) configured by ``imu`` (an :class:`ImuConfig`) for
    ``tokens`` matrix-vector products with an ``n x k`` matrix, as the golden host driver
    runs them (:func:`golden.imu.layer_cycles`): per tile of ``outputs x k_max``, the host
    rewrites the weight memory and codebooks (one write per cycle), then the tokens
    stream; each token has ``outlier_beats`` outlier beats in each tile and the layer's
    activation ``shift``.  The co-simulation (testbench/test_sida.py) holds the RTL to
    this, cycle for cycle.
    """
    if tokens <= 0:
        return 0
    tail = imu.tail_ops(shift, outlier_beats)
    return layer_cycles(imu, n, k, [[tail] * tokens] * len(tiles(imu, n, k)))


@dataclass(frozen=True)
class CycleModel:
    """IMU configuration, load bandwidth and the MoE shapes the accounting needs.

    ``imu`` is the RTL unit's configuration (:class:`base.config.ImuConfig`, as
    ``kllm sida --set`` builds it); ``shift`` and ``outlier_beats`` are the
    per-tile tail work of a token (the scheme's k = 8 outliers per side give 16
    outlier beats).
    """
    imu: ImuConfig = DEFAULT_IMU
    shift: int = 1                  # activation shift (tail doublings per token and tile)
    outlier_beats: int = 16         # outlier beats per token and tile
    bandwidth: float = 8.0          # expert loads, bytes per cycle
    hidden: int = 384               # model width d
    neurons: int = 96               # FFN neurons per expert
    experts: int = 16               # experts per layer (router output width)
    expert_bytes: int = 0           # bytes of one expert (quantized), see ExpertWeights

    def __post_init__(self):
        if type(self.imu) is not ImuConfig:
            raise TypeError(f"cycle model: imu must be an ImuConfig, not {self.imu!r}")
        for name in ("hidden", "neurons", "experts", "expert_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"cycle model: {name} must be a positive integer, got {v!r}")
        for name in ("shift", "outlier_beats"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"cycle model: {name} must be an integer >= 0, got {v!r}")
        if not self.bandwidth > 0:
            raise ValueError(f"cycle model: bandwidth must be > 0 bytes/cycle, "
                             f"got {self.bandwidth!r}")
        if self.shift > self.imu.shift_max:
            raise ValueError(f"cycle model: shift must be in 0..{self.imu.shift_max}, "
                             f"got {self.shift}")
        if self.outlier_beats > self.imu.outliers:
            raise ValueError(f"cycle model: outlier_beats must be at most the IMU's outlier "
                             f"capacity {self.imu.outliers}, got {self.outlier_beats}")

    def mv(self, n, k, tokens):
        return imu_cycles(n, k, tokens, imu=self.imu, shift=self.shift,
                          outlier_beats=self.outlier_beats)

    def dense(self, tokens, router=True):
        """The layer's dense linears (q, k, v, attention out) and, if used, the router."""
        d = self.hidden
        c = 4 * self.mv(d, d, tokens)
        return c + (self.mv(self.experts, d, tokens) if router else 0)

    def expert(self, tokens):
        """One expert's FFN slice (W1 rows then W2 columns) for ``tokens`` tokens."""
        return self.mv(self.neurons, self.hidden, tokens) + self.mv(self.hidden, self.neurons, tokens)

    def load(self):
        """Cycles to write one expert into the weight buffer."""
        return math.ceil(self.expert_bytes / self.bandwidth)


@dataclass
class ExpertWeights:
    """One expert's quantized weights, as the host writes them into the IMU."""
    layer: int
    expert: int
    w_in: object        # golden.quant.WeightCodebook, (neurons, d)
    b_in: torch.Tensor  # (neurons,)
    w_out: object       # WeightCodebook, (d, neurons)
    bw: int = 4
    cw: int = 8

    def nbytes(self):
        """Indices packed at ``bw`` bits, centroids at ``cw`` bits, a 16-bit scale per
        output channel, a 32-bit bias per neuron."""
        total = 0
        for w in (self.w_in, self.w_out):
            total += math.ceil(w.Iw.numel() * self.bw / 8) + math.ceil(w.Cw.numel() * self.cw / 8)
            total += 2 * w.sw.numel()
        return total + 4 * self.b_in.numel()


def quantize_experts(model, split, *, bw=4, cw=8, layers=None, experts=None):
    """K-Means-quantize expert weights: {(layer, e): ExpertWeights} (golden.quant format).

    ``W1[S_e]`` keeps per-neuron codebooks (rows of the dense layer);
    ``W2[:, S_e]`` gets its own per-output-channel codebooks fitted on the
    expert's slice, so each expert is self-contained in the buffer.
    """
    out = {}
    for layer in (range(split.layers) if layers is None else layers):
        W1, b1 = model.weight(layer, "ffn_in"), model.bias(layer, "ffn_in")
        W2 = model.weight(layer, "ffn_out")
        for e in (range(split.experts) if experts is None else experts):
            S = split.groups[layer][e]
            out[layer, e] = ExpertWeights(
                layer, e, fit_weight_codebook(W1[S], bw, cw=cw, name=f"layer{layer}.expert{e}.in"),
                b1[S].clone(),
                fit_weight_codebook(W2[:, S], bw, cw=cw, name=f"layer{layer}.expert{e}.out"),
                bw, cw)
    return out


# -------------------------------------------------------------- weight buffer

class BufferError(KllmError):
    """A load the weight buffer cannot take."""


class WeightBuffer:
    """The accelerator's expert weight memory as the host driver sees it: ``capacity`` slots.

    ``load(key, weights)`` writes one expert into a free slot;
    ``evict(key)`` frees its slot; ``load_set(items)`` loads several or,
    if they do not all fit, raises before writing anything.  Subclasses
    implement :meth:`write` (e.g. a cocotb driver writing the IMU's host
    ports for weight indices and codebooks at the slot's address); this
    class only keeps the bookkeeping and counts bytes.
    """

    def __init__(self, capacity):
        if not isinstance(capacity, int) or capacity < 1:
            raise BufferError(f"buffer capacity must be a positive number of experts, "
                              f"got {capacity!r}")
        self.capacity = capacity
        self.slots = [None] * capacity
        self.bytes_written = 0
        self.loads = 0

    @property
    def resident(self):
        return {k for k in self.slots if k is not None}

    def slot_of(self, key):
        try:
            return self.slots.index(key)
        except ValueError:
            return None

    def free_slots(self):
        return [i for i, k in enumerate(self.slots) if k is None]

    def write(self, slot, key, weights):
        """Write ``weights`` into ``slot`` (the host ports); nothing to do in the golden model."""

    def load(self, key, weights=None, nbytes=0):
        if key in self.slots:
            raise BufferError(f"expert {key} is already resident")
        free = self.free_slots()
        if not free:
            raise BufferError(f"weight buffer full ({self.capacity} experts): evict before "
                              f"loading expert {key}")
        self.write(free[0], key, weights)
        self.slots[free[0]] = key
        self.bytes_written += nbytes
        self.loads += 1
        return free[0]

    def evict(self, key):
        slot = self.slot_of(key)
        if slot is None:
            raise BufferError(f"expert {key} is not resident")
        self.slots[slot] = None

    def load_set(self, items, nbytes=0):
        """Load ``{key: weights}`` all or nothing."""
        new = [k for k in items if k not in self.slots]
        if len(new) > len(self.free_slots()):
            raise BufferError(f"weight buffer too small: {len(new)} expert(s) to load, "
                              f"{len(self.free_slots())} free of {self.capacity}; "
                              f"nothing loaded")
        return [self.load(k, items[k], nbytes) for k in new]


# ---------------------------------------------------------------- controller

#: The policies, in table order.
POLICIES = ("resident", "lru", "oracle", "sida", "sida-hash")
POLICY_NAMES = {
    "resident": "all experts resident",
    "lru": "on-demand, LRU",
    "oracle": "oracle prefetch",
    "sida": "SiDA prefetch, exact routing",
    "sida-hash": "SiDA, hash-routed",
}


@dataclass
class TraceBatch:
    """One batch of the trace: token count and per layer the (n, k) experts of each token."""
    tokens: int
    true: list          # per layer LongTensor (n, k)
    pred: list = None   # per layer LongTensor (n, k'), or None


def make_trace(true, pred=None, batch=1):
    """Group per-sentence routing ((layers, n, k) each) into batches of ``batch`` sentences."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1 sentence, got {batch}")
    out = []
    for s in range(0, len(true), batch):
        t = true[s:s + batch]
        p = pred[s:s + batch] if pred is not None else None
        L = t[0].shape[0]
        out.append(TraceBatch(
            sum(x.shape[1] for x in t), [torch.cat([x[l] for x in t]) for l in range(L)],
            None if p is None else [torch.cat([x[l] for x in p]) for l in range(L)]))
    return out


def _counts(experts):
    """{expert: tokens} from (n, k), ordered by tokens descending then expert id."""
    ids, n = torch.unique(experts.flatten(), return_counts=True)
    pairs = sorted(zip(ids.tolist(), n.tolist()), key=lambda x: (-x[1], x[0]))
    return dict(pairs)


@dataclass
class _Slot:
    key: object = None
    release: int = 0        # the earliest cycle the slot may be overwritten
    last_use: int = -1      # order of its last use (LRU)


@dataclass
class SimResult:
    policy: str
    capacity: int
    tokens: int = 0
    compute: int = 0
    expert_compute: int = 0  # the part of `compute` spent in expert steps
    stall: int = 0
    cycles: int = 0
    loads: int = 0
    wasted: int = 0         # predicted, loaded, not used by the batch
    cancelled: int = 0      # predicted, not used, cancelled before the load started
    bytes: int = 0
    fill_bytes: int = 0     # all-resident: the one-off fill before the run
    uses: int = 0
    hits: int = 0
    events: list = field(default_factory=list)

    @property
    def throughput(self):
        return 1000.0 * self.tokens / self.cycles if self.cycles else 0.0

    @property
    def hit_rate(self):
        return self.hits / self.uses if self.uses else 1.0

    @property
    def stall_share(self):
        return self.stall / self.compute if self.compute else 0.0

    def row(self, cm):
        return {"policy": self.policy, "name": POLICY_NAMES[self.policy], "capacity": self.capacity,
                "buffer_kib": self.capacity * cm.expert_bytes / 1024, "tokens": self.tokens,
                "cycles": self.cycles, "compute": self.compute, "stall": self.stall,
                "expert_compute": self.expert_compute,
                "stall_expert_share": self.stall / self.expert_compute if self.expert_compute else 0.0,
                "stall_share": self.stall_share, "throughput": self.throughput,
                "loads": self.loads, "wasted": self.wasted, "cancelled": self.cancelled,
                "bytes": self.bytes, "fill_bytes": self.fill_bytes, "hit_rate": self.hit_rate}


def simulate(trace, policy, capacity, cm, buffer=None, weights=None, log=False):
    """Run ``policy`` over ``trace`` (list of :class:`TraceBatch`) with ``capacity`` expert slots.

    The accelerator is two engines: the IMU computes steps in program order
    (per batch, per layer: the dense linears + router, then one step per
    used expert with the tokens routed to it); a load engine writes experts
    into slots one at a time (``cm.load()`` cycles each) in program order of
    first use.  A load starts at the latest of: the load engine free, its
    slot's release (the end of the last use of the expert it replaces), and
    the time the controller knows it needs the expert (the start of the
    previous batch for predicted experts, since SiDA predicts batch t+1
    while batch t runs; the router's decision for on-demand loads).  A step
    whose expert is not ready waits: that wait is the stall.  ``buffer``
    (a :class:`WeightBuffer`) receives every load and eviction in program
    order, with ``weights(key)`` (e.g. the :class:`ExpertWeights` of
    ``(layer, expert)``) as the data to write when ``weights`` is given.
    See docs/ARCHITECTURE.md for the policies.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (policies: {', '.join(POLICIES)})")
    L, E = len(trace[0].true), cm.experts
    needs_pred = policy in ("sida", "sida-hash")
    if needs_pred and any(b.pred is None for b in trace):
        raise ValueError(f"policy {policy} needs predicted routing in the trace")
    if policy == "resident" and capacity < L * E:
        raise BufferError(f"all-resident needs {L * E} expert slots ({L} layers x {E}), the "
                          f"buffer has {capacity}")
    if policy in ("oracle", "sida", "sida-hash") and capacity < 2:
        raise BufferError(f"buffer of {capacity} expert(s) is too small for prefetching: a "
                          f"batch's predicted experts stream through at least 2 slots (one "
                          f"computing while the next loads); nothing loaded")
    buf = buffer if buffer is not None else WeightBuffer(capacity)
    if buf.capacity != capacity:
        raise ValueError(f"buffer has {buf.capacity} slots, simulate was given {capacity}")
    r = SimResult(policy, capacity)
    slots = [_Slot() for _ in range(capacity)]
    where, ready = {}, {}
    if policy == "resident":
        keys = {(l, e): weights((l, e)) if weights else None for l in range(L) for e in range(E)}
        buf.load_set(keys, cm.expert_bytes)
        for i, key in enumerate(keys):
            slots[i].key, where[key], ready[key] = key, i, 0
        r.fill_bytes = len(keys) * cm.expert_bytes
    now = dma = 0
    order = 0
    batch_start = []

    def pick_victim(future):
        free = [i for i, s in enumerate(slots) if s.key is None]
        if free:
            return free[0]
        if policy == "lru" or future is None:
            return min(range(capacity), key=lambda i: (slots[i].last_use, slots[i].release))

        # Evict what the plan does not need within the next `capacity` experts, the
        # slot that frees up first; keeping a far-future expert would shrink the
        # prefetch ring, so it only wins a tie.  Among slots all needed soon, the
        # one needed last (Belady).
        def rank(i):
            try:
                nxt = future.index(slots[i].key)
            except ValueError:
                nxt = math.inf                 # not predicted for this batch
            return (False, slots[i].release, -nxt) if nxt >= capacity else (True, 0, -nxt)
        return min(range(capacity), key=rank)

    def load(key, know, future, cancel_after=None):
        nonlocal dma
        v = pick_victim(future)
        start = max(dma, slots[v].release, know)
        if cancel_after is not None and start >= cancel_after:
            r.cancelled += 1
            return None
        old = slots[v].key
        if old is not None:
            buf.evict(old)
            del where[old]
        buf.load(key, weights(key) if weights else None, cm.expert_bytes)
        end = start + cm.load()
        dma = end
        slots[v] = _Slot(key, end, order)
        where[key], ready[key] = v, end
        r.loads += 1
        r.bytes += cm.expert_bytes
        if log:
            r.events.append(("load", v, key, start, end, old))
        return v

    def use(key, tokens):
        nonlocal now, order
        v = where[key]
        start = max(now, ready[key])
        r.stall += start - now
        c = cm.expert(tokens)
        r.compute += c
        r.expert_compute += c
        now = start + c
        order += 1
        slots[v].release, slots[v].last_use = now, order
        r.uses += 1
        if log:
            r.events.append(("use", v, key, start, now))

    for b, batch in enumerate(trace):
        know_pred = batch_start[b - 1] if b else 0
        batch_start.append(now)
        r.tokens += batch.tokens
        used = batch.pred if policy == "sida-hash" else batch.true
        # the batch's known plan (prediction / oracle): for "evict what is not predicted"
        plan = None
        if policy in ("oracle", "sida-hash"):
            plan = [(l, e) for l in range(L) for e in _counts(used[l])]
        elif policy == "sida":
            plan = [(l, e) for l in range(L) for e in _counts(batch.pred[l])]
        pos = 0
        for l in range(L):
            # dense linears and router (hash-routed mode needs no router)
            d = cm.dense(batch.tokens, router=policy != "sida-hash")
            r.compute += d
            now += d
            router = now
            if log:
                r.events.append(("dense", b, l, router - d, router))
            true = _counts(used[l])
            if policy == "resident":
                for e, n in true.items():
                    r.hits += 1
                    use((l, e), n)
            elif policy == "lru":
                hits = [e for e in true if (l, e) in where]
                for e in hits:
                    r.hits += 1
                    use((l, e), true[e])
                for e in true:
                    if e not in hits:
                        load((l, e), router, None)
                        use((l, e), true[e])
            else:
                predicted = _counts(batch.pred[l]) if policy == "sida" else true
                for e in predicted:
                    key = (l, e)
                    future = plan[pos:]
                    pos += 1
                    if e in true:
                        if key not in where:
                            load(key, know_pred, future)
                        r.hits += 1
                        use(key, true[e])
                    elif key not in where:     # predicted, not used: bandwidth only
                        v = load(key, know_pred, future, cancel_after=router)
                        if v is not None:
                            r.wasted += 1
                            slots[v].release = max(slots[v].release, router)
                for e in true:
                    if e not in predicted:     # a miss: fetched on demand after the router
                        if (l, e) not in where:
                            load((l, e), router, plan[pos:])
                        else:
                            r.hits += 1
                        use((l, e), true[e])
    r.cycles = now
    return r


# ------------------------------------------------------------ co-simulation
#
# The controller above decides which experts sit in the buffer; the buffer is the staging
# memory in front of the IMU, whose own weight memory holds one tile.  To run an expert, the
# golden host driver (golden.imu) writes the expert's tiles from its buffer slot into the
# IMU through the host ports, tile by tile, and streams the tokens.  `cosim_scenario` builds
# a real case for the cocotb bench (testbench/test_sida.py): one MoE layer of real text
# through the controller with a recording buffer, then the first expert it runs, with the
# operands of both of its matrices on real tokens and their golden integers.

__all__ += ["RecordingBuffer", "expert_operands", "cosim_scenario"]


class RecordingBuffer(WeightBuffer):
    """A :class:`WeightBuffer` that keeps what the controller wrote into each slot."""

    def __init__(self, capacity):
        super().__init__(capacity)
        self.history = []           # (slot, key, weights), in order

    def write(self, slot, key, weights):
        if weights is None:
            raise BufferError(f"expert {key}: no weights to write into slot {slot}")
        if self.slots[slot] is not None:
            raise BufferError(f"slot {slot} still holds expert {self.slots[slot]}: evict first")
        self.history.append((slot, key, weights))


def expert_operands(w, act_in, act_hidden, x, *, k=8):
    """The integer operands of an expert FFN on the IMU for real tokens ``x`` (n, d).

    ``w`` (:class:`ExpertWeights`), ``act_in`` / ``act_hidden`` the activation
    codebooks of the FFN input and of the expert's hidden layer
    (:class:`golden.quant.ActivationCodebook`), ``k`` outliers per side.
    Returns ``(first, second, out)``: each of the two matrices as
    ``(Iw, Cw, ia, Ca, shift, residual, y)`` with ``y`` the golden integers
    (:func:`golden.imu.index_matmul`), and the expert's output in float from
    those integers (the host's scaling, bias and GELU between the two).
    """

    def matmul(wc, act, v):
        xi, ia, mask = act.quantize(v, k)
        residual = torch.where(mask, xi - (act.Ca[ia] << act.shift), 0)
        y = index_matmul(wc.Iw, wc.Cw, ia, act.Ca, shift=act.shift, residual=residual)
        return (wc.Iw, wc.Cw, ia, act.Ca, act.shift, residual, y), y.double() * wc.sw * act.sx

    first, h = matmul(w.w_in, act_in, x)
    g = torch.nn.functional.gelu(h + w.b_in.double()).float()
    second, out = matmul(w.w_out, act_hidden, g)
    return first, second, out


def cosim_scenario(model, split, *, layer=1, capacity=4, k=4, tokens=3, outliers=8,
                   calibration=24, sentence=0):
    """A real co-simulation case (see the section comment); a dict of tensors and numbers.

    One evaluation sentence runs through the MoE with the true router (top-``k``);
    layer ``layer``'s routing is the trace of the controller (oracle policy,
    ``capacity`` slots, a :class:`RecordingBuffer`); the first expert the
    controller runs is taken from its slot with the first ``tokens`` tokens
    routed to it.  Activation codebooks (4 bits, ``outliers`` per side) are
    fitted on ``calibration`` calibration sentences: the layer's FFN input, and
    the expert's hidden activations of the tokens routed to it.
    """

    name = f"layer{layer}.ffn_in"

    class Capture(MoEHooks):
        def begin(self, batch):
            super().begin(batch)
            self.x = self.g = None

        def linear(self, lname, act, x, weight, bias):
            if lname == name:
                self.x = x[self.mask]
            return super().linear(lname, act, x, weight, bias)

        def gelu(self, gname, x):
            if gname.startswith(f"layer{layer}."):
                self.g = super(MoEHooks, self).gelu(gname, x)[self.mask]
            return super().gelu(gname, x)

    def capture(sentences):
        hooks = Capture(model, split, k=k)
        xs, gs, es = [], [], []
        for s in sentences:          # one sentence per pass: real tokens only, no padding
            moe_embed(model, [s], hooks)
            xs.append(hooks.x)
            gs.append(hooks.g)
            es.append(hooks.records[layer]["experts"])
        return torch.cat(xs), torch.cat(gs), torch.cat(es)

    cal_x, cal_g, cal_e = capture(calibration_sentences(calibration))
    text = evaluation_sentences(sentence + 1)[sentence]
    x, _, experts = capture([text])

    weights = quantize_experts(model, split, layers=[layer])
    cm = CycleModel(expert_bytes=next(iter(weights.values())).nbytes())
    buf = RecordingBuffer(capacity)
    trace = make_trace([experts[None]])
    res = simulate(trace, "oracle", capacity, cm, buffer=buf,
                   weights=lambda key: weights[layer, key[1]], log=True)
    at = next(i for i, e in enumerate(res.events) if e[0] == "use")
    slot, key = res.events[at][1], res.events[at][2]
    expert = key[1]
    loaded = sum(e[0] == "load" for e in res.events[:at])    # writes done before that use
    w = buf.history[max(i for i, (s, _, _) in enumerate(buf.history[:loaded]) if s == slot)][2]
    if (layer, expert) != (w.layer, w.expert):
        raise AssertionError(f"slot {slot} holds expert {(w.layer, w.expert)}, the controller "
                             f"ran {(layer, expert)} from it")
    routed = (experts == expert).any(1).nonzero(as_tuple=True)[0]
    pick = routed[:tokens]
    S = split.groups[layer][expert]
    cal_tokens = (cal_e == expert).any(1)
    act_in = fit_activation_codebook(cal_x, 4, k=outliers, name=f"{name} input")
    act_hidden = fit_activation_codebook(cal_g[cal_tokens][:, S], 4, k=outliers,
                                         name=f"layer{layer} expert {expert} hidden")
    first, second, out = expert_operands(w, act_in, act_hidden, x[pick], k=outliers)
    W1, b1 = model.weight(layer, "ffn_in")[S], model.bias(layer, "ffn_in")[S]
    W2 = model.weight(layer, "ffn_out")[:, S]
    reference = torch.nn.functional.gelu(x[pick] @ W1.T + b1) @ W2.T
    return {"layer": layer, "expert": expert, "slot": slot, "tokens": pick.tolist(),
            "writes": [(s, (layer, k[1])) for s, k, _ in buf.history], "sentence": text, "first": first, "second": second,
            "out": out, "reference": reference}
