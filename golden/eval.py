"""Accuracy of the quantization schemes on the real model and real text.

Every row of the report is measured in one run, against the FP32 embeddings
of the same evaluation sentences:

* mean and worst cosine similarity of each sentence embedding to FP32;
* Spearman correlation of all pairwise sentence similarities with FP32;
* top-1 / top-5 nearest-neighbour agreement with FP32 (fragile: reported
  with its standard error and the share of sentences whose first and second
  FP32 neighbours are closer than 0.02);
* the share of activations that took the outlier path;
* average stored bits per weight (codebooks, scales and sparse weights counted).
"""

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from base.files import write_files
from golden import lut, norm, softmax
from golden.kmeans import assign, kmeans1d
from golden.minilm import Hooks, load_minilm
from golden.quant import Scheme, calibrate
from golden.text import calibration_sentences, evaluation_sentences

__all__ = ["DEFAULT_OUTLIERS", "table_schemes", "bits_sweep", "metrics", "evaluate"]

#: Outliers per side per token in the default scheme: see docs/RESULTS.md for
#: the k sweep this choice rests on.
DEFAULT_OUTLIERS = 8

#: The weight recipe of the project's K-Means scheme (what each part buys is
#: measured in the ablation rows of the report).
RECIPE = {"gptq": True, "sparse": 0.005}


def kllm(name, wbits, abits, k=DEFAULT_OUTLIERS, **kw):
    return Scheme(name, wbits=wbits, abits=abits, outliers=k, **{**RECIPE, **kw})


def table_schemes():
    k = DEFAULT_OUTLIERS
    return [
        Scheme("FP32", method="fp32"),
        kllm(f"K-Means W4A4 + outliers (k={k})", 4, 4),
        kllm("K-Means W4A4 without outliers", 4, 4, k=0),
        Scheme("uniform RTN W4A4 (per-channel W, per-token A)", method="uniform", wbits=4, abits=4),
        Scheme(f"uniform RTN W4A4 + outliers (k={k})", method="uniform", wbits=4, abits=4, outliers=k),
        Scheme("uniform RTN W8A8", method="uniform", wbits=8, abits=8),
        kllm(f"K-Means W3A4 + outliers (k={k})", 3, 4),
        kllm("K-Means W4 only", 4, None, k=0),
        kllm(f"K-Means A4 + outliers (k={k}) only", None, 4),
        Scheme(f"plain Lloyd W4A4 + outliers (k={k}): no compensation, no sparse", wbits=4,
               abits=4, outliers=k),
        kllm(f"K-Means W4A4 + outliers (k={k}), compensation but no sparse", 4, 4, sparse=0.0),
        kllm("K-Means W4A4 + outliers (k=4)", 4, 4, k=4),
        kllm("K-Means W4A4 + outliers (k=16)", 4, 4, k=16),
    ]


def bits_sweep(bits=(3, 4, 5, 6)):
    k = DEFAULT_OUTLIERS
    out = []
    for b in bits:
        out.append(("K-Means + outliers", b, kllm(f"K-Means W{b}A{b} k={k}", b, b)))
        out.append(("uniform RTN", b, Scheme(f"uniform W{b}A{b}", method="uniform", wbits=b, abits=b)))
    return out


def _ranks(v):
    r = torch.empty_like(v)
    r[v.argsort()] = torch.arange(len(v), dtype=v.dtype)
    return r


def metrics(ref, emb, gap=0.02):
    ref, emb = ref.double(), emb.double()
    n = len(ref)
    cos = (ref * emb).sum(-1)
    S_ref, S_q = ref @ ref.T, emb @ emb.T
    iu = torch.triu_indices(n, n, 1)
    a, b = _ranks(S_ref[iu[0], iu[1]]), _ranks(S_q[iu[0], iu[1]])
    a, b = a - a.mean(), b - b.mean()
    spearman = float((a * b).sum() / (a.norm() * b.norm()))
    eye = torch.eye(n, dtype=torch.bool)
    S_ref = S_ref.masked_fill(eye, -math.inf)
    S_q = S_q.masked_fill(eye, -math.inf)
    top_ref = S_ref.topk(5, dim=1)
    top_q = S_q.topk(5, dim=1).indices
    top1 = float((top_ref.indices[:, 0] == top_q[:, 0]).double().mean())
    top5 = float(torch.tensor([len(set(x.tolist()) & set(y.tolist())) / 5
                               for x, y in zip(top_ref.indices, top_q)]).mean())
    fragile = float(((top_ref.values[:, 0] - top_ref.values[:, 1]) < gap).double().mean())
    return {
        "cos_mean": float(cos.mean()), "cos_worst": float(cos.min()),
        "spearman": spearman, "top1": top1, "top1_se": math.sqrt(top1 * (1 - top1) / n),
        "top5": top5, "fragile_share": fragile,
    }


def evaluate(n_eval=500, n_cal=128, schemes=None, sweep=None, progress=None):
    """Run the schemes; return ``{"rows": [...], "sweep": [...], ...}``."""
    say = progress or (lambda text: None)
    model = load_minilm()
    cal = calibration_sentences(n_cal)
    ev = evaluation_sentences(n_eval)
    say("FP32 reference embeddings")
    ref = model.embed(ev)

    def run(scheme):
        t0 = time.perf_counter()
        if scheme.method == "fp32":
            emb, bpw, share = ref, 32.0, 0.0
        else:
            hooks = calibrate(model, scheme, cal)
            emb = model.embed(ev, hooks)
            bpw, share = hooks.bits_per_weight(model), hooks.outlier_share()
        row = {"scheme": scheme.name, "config": {k: v for k, v in asdict(scheme).items()},
               **metrics(ref, emb), "outlier_share": share, "bits_per_weight": bpw,
               "seconds": time.perf_counter() - t0}
        return row

    rows = []
    schemes = table_schemes() if schemes is None else schemes
    for k, s in enumerate(schemes):
        say(f"[{k + 1}/{len(schemes)}] {s.name}")
        rows.append(run(s))
    sweep_rows = []
    sweep = bits_sweep() if sweep is None else sweep
    for k, (family, bits, s) in enumerate(sweep):
        say(f"[sweep {k + 1}/{len(sweep)}] {s.name}")
        sweep_rows.append({"family": family, "bits": bits, **run(s)})
    return {"n_eval": len(ev), "n_calibration": len(cal), "rows": rows, "sweep": sweep_rows}


def markdown(result):
    head = ("scheme", "mean cos", "worst cos", "Spearman", "top-1 NN", "top-5 NN",
            "outliers", "bits/weight")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([
            r["scheme"], f"{r['cos_mean']:.4f}", f"{r['cos_worst']:.4f}", f"{r['spearman']:.4f}",
            f"{r['top1']:.3f} ± {r['top1_se']:.3f}", f"{r['top5']:.3f}",
            f"{100 * r['outlier_share']:.2f}%", f"{r['bits_per_weight']:.2f}"]) + " |")
    fragile = result["rows"][0]["fragile_share"]
    lines.append("")
    lines.append(f"{result['n_eval']} evaluation sentences, {result['n_calibration']} calibration "
                 f"sentences (disjoint). Top-1 NN: ± one standard error; in FP32 "
                 f"{100 * fragile:.0f}% of the sentences have their first two neighbours "
                 f"within 0.02 of each other, so top-1 agreement is fragile.")
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    families = {}
    for r in result["sweep"]:
        families.setdefault(r["family"], []).append(r)
    for family, rows in families.items():
        rows.sort(key=lambda r: r["bits"])
        ax.plot([r["bits"] for r in rows], [r["cos_mean"] for r in rows], "o-", label=family)
    ax.set(xlabel="bits (weights = activations)", ylabel="mean cosine to FP32",
           title="all-MiniLM-L6-v2, real text: accuracy vs bits")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result, out_dir):
    out = Path(out_dir)
    table = markdown(result)
    if result.get("nonlinear"):
        table += "\nIndex-domain nonlinear units on real MiniLM activations:\n\n"
        table += nonlinear_markdown(result["nonlinear"])
    write_files(out, {"eval.json": json.dumps(result, indent=2) + "\n", "eval.md": table})
    plot(result, out / "accuracy_vs_bits.png")
    return table


# ------------------------------------------------------- nonlinear units on real data

def _capture(model, sentences):
    """Real inputs of GELU, softmax and LayerNorm (layers 0..5) for ``sentences``."""
    got = {"gelu": [], "softmax": [], "layernorm": []}

    class Capture(Hooks):
        def begin(self, batch):
            self.mask = batch.attention_mask.bool()

        def gelu(self, name, x):
            got["gelu"].append(x[self.mask])
            return super().gelu(name, x)

        def softmax(self, name, scores):
            B, H, T, _ = scores.shape
            rows = scores.masked_fill(~self.mask[:, None, None, :], float("nan"))
            rows = rows[self.mask[:, None, :, None].expand(B, H, T, T)].view(-1, T)
            got["softmax"].extend(r[~r.isnan()] for r in rows[::7])   # every 7th row
            return super().softmax(name, scores)

        def layernorm(self, name, x, weight, bias, eps):
            if name != "embeddings.ln":
                got["layernorm"].append(x[self.mask])
            return super().layernorm(name, x, weight, bias, eps)

    model.embed(sentences, Capture())
    return got


def nonlinear_errors(ba=4, n_cal=32, n_eval=64):
    """Error of the index-domain GELU table, histogram softmax and histogram LayerNorm
    on real MiniLM activations, against float: ``total`` (vs float of the unquantized
    input) and ``unit`` (vs float of the dequantized input: the unit's own error)."""
    model = load_minilm()
    cal = _capture(model, calibration_sentences(n_cal))
    ev = _capture(model, evaluation_sentences(n_eval))

    def codebook(values, frac=8):
        c, _ = kmeans1d(values.flatten().double()[:: max(1, values.numel() // 200_000)], 2 ** ba)
        scale = float(c.abs().max()) / 127
        return torch.round(c / scale).long().unique(), scale

    def index(x, C, scale):
        return assign(x.double().reshape(1, -1), (C.double() * scale)[None]).view(x.shape)

    out = {}
    # GELU: index -> 16-bit fixed point, as many fraction bits as the range allows
    x_cal, x_ev = torch.cat(cal["gelu"]), torch.cat(ev["gelu"])
    C, s = codebook(x_cal)
    idx = index(x_ev, C, s)
    f = lut.FUNCTIONS["gelu"]
    frac = 15 - math.ceil(math.log2(float(f(C.double() * s).abs().max()) + 1))
    y = lut.apply(lut.table_to_fixed("gelu", C, s, frac), idx).double() / 2 ** frac
    out["gelu"] = {"total_max": float((y - f(x_ev.double())).abs().max()),
                   "total_mean": float((y - f(x_ev.double())).abs().mean()),
                   "unit_max": float((y - f(C[idx].double() * s)).abs().max()),
                   "values": x_ev.numel(), "frac_bits": frac}
    # softmax over real attention rows
    C, s = codebook(torch.cat([r for r in cal["softmax"]]))
    errs, errs_unit, flips, flips_unit = [], [], 0, 0
    for r in ev["softmax"]:
        i = index(r, C, s)[None]
        _, p = softmax.softmax_rows(i, C, s)
        ref = torch.softmax(r.double(), -1)
        ref_q = torch.softmax(C[i].double() * s, -1)
        errs.append((p[0] - ref).abs().max())
        errs_unit.append((p[0] - ref_q[0]).abs().max())
        flips += int(p[0].argmax() != ref.argmax())
        flips_unit += int(p[0].argmax() != ref_q[0].argmax())
    n = len(ev["softmax"])
    out["softmax"] = {"total_max": float(max(errs)), "total_mean": float(sum(errs) / n),
                      "unit_max": float(max(errs_unit)), "argmax_flip_rate": flips / n,
                      "argmax_flip_rate_unit": flips_unit / n, "rows": n}
    # LayerNorm (no affine: it folds into the next layer)
    x_cal, x_ev = torch.cat(cal["layernorm"]), torch.cat(ev["layernorm"])
    C, s = codebook(x_cal)
    idx = index(x_ev, C, s)
    _, _, y = norm.norm_rows(idx, C, "layernorm")
    ref = torch.nn.functional.layer_norm(x_ev.double(), (x_ev.shape[-1],))
    xq = C[idx].double()
    ref_q = (xq - xq.mean(1, keepdim=True)) / xq.std(1, unbiased=False, keepdim=True)
    out["layernorm"] = {"total_max": float((y - ref).abs().max()),
                        "total_mean": float((y - ref).abs().mean()),
                        "unit_max": float((y - ref_q).abs().max()), "rows": len(x_ev)}
    # RMSNorm on the same rows (MiniLM has none; the unit's rms=1 mode)
    _, _, y = norm.norm_rows(idx, C, "rmsnorm")
    ref = x_ev.double() / x_ev.double().pow(2).mean(1, keepdim=True).sqrt()
    ref_q = xq / xq.pow(2).mean(1, keepdim=True).sqrt()
    out["rmsnorm"] = {"total_max": float((y - ref).abs().max()),
                      "total_mean": float((y - ref).abs().mean()),
                      "unit_max": float((y - ref_q).abs().max()), "rows": len(x_ev)}
    return out


def nonlinear_markdown(errs, ba=4):
    lines = [f"| unit ({ba}-bit index input) | max abs error vs float | mean abs error vs float "
             "| unit's own max error (vs float of the dequantized input) | other |",
             "|---|---|---|---|---|"]
    g, s, n = errs["gelu"], errs["softmax"], errs["layernorm"]
    lines.append(f"| GELU table (index -> 16-bit, {g['frac_bits']} fraction bits) | {g['total_max']:.4f} | "
                 f"{g['total_mean']:.4f} | {g['unit_max']:.5f} | {g['values']} values |")
    lines.append(f"| softmax by histogram | {s['total_max']:.4f} | {s['total_mean']:.4f} | "
                 f"{s['unit_max']:.5f} | argmax differs from float in "
                 f"{100 * s['argmax_flip_rate']:.1f}% of {s['rows']} rows "
                 f"({100 * s['argmax_flip_rate_unit']:.1f}% vs the dequantized input) |")
    lines.append(f"| LayerNorm by histogram | {n['total_max']:.4f} | {n['total_mean']:.4f} | "
                 f"{n['unit_max']:.5f} | {n['rows']} rows |")
    if "rmsnorm" in errs:
        n = errs["rmsnorm"]
        lines.append(f"| RMSNorm by histogram (LayerNorm inputs) | {n['total_max']:.4f} | "
                     f"{n['total_mean']:.4f} | {n['unit_max']:.5f} | {n['rows']} rows |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------- the fully integer model (the core)

def integer_comparison(n_eval=500, n_cal=128, progress=None, cfg=None, cache_dir=None):
    """The core's fully integer model (:mod:`golden.intmodel`) beside the linears-only
    K-Means W4A4 rows, against FP32 on the same evaluation text, measured in one run."""
    from golden.intmodel import IntConfig, build, sentence_embedding
    say = progress or (lambda text: None)
    k = DEFAULT_OUTLIERS
    schemes = [Scheme("FP32", method="fp32"),
               kllm(f"K-Means W4A4 + outliers (k={k}), linears only", 4, 4),
               kllm(f"K-Means W4A4 + outliers (k={k}), linears only, no sparse weights", 4, 4,
                    sparse=0.0)]
    result = evaluate(n_eval, n_cal, schemes=schemes, sweep=[], progress=say)
    model = load_minilm()
    ref = model.embed(evaluation_sentences(n_eval))
    t0 = time.perf_counter()
    say("fitting the integer model")
    cfg = cfg or IntConfig()
    if cache_dir is not None:       # the fit kllm run made (same settings, same code) serves
        from golden.intmodel import cached_build
        im = cached_build(cache_dir, n_cal, cfg, progress=say)
    else:
        im = build(calibration_sentences(n_cal), cfg, model, progress=say)
    say("integer model on the evaluation sentences")
    emb = torch.stack([sentence_embedding(im, model, s) for s in evaluation_sentences(n_eval)])
    result["rows"].append({"scheme": "fully integer model (the core's contract: every op in "
                                     "integers)", "config": asdict(cfg),
                           **metrics(ref, emb), "outlier_share": float("nan"),
                           "bits_per_weight": float("nan"),
                           "seconds": time.perf_counter() - t0})
    return result


def integer_markdown(result):
    head = ("model", "mean cos", "worst cos", "Spearman", "top-1 NN")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append(f"| {r['scheme']} | {r['cos_mean']:.4f} | {r['cos_worst']:.4f} | "
                     f"{r['spearman']:.4f} | {r['top1']:.3f} ± {r['top1_se']:.3f} |")
    ref = next(r for r in result["rows"] if r["scheme"].startswith("K-Means") and
               "no sparse" not in r["scheme"])
    gap = ref["cos_mean"] - result["rows"][-1]["cos_mean"]
    lines += ["", f"{result['n_eval']} evaluation sentences, {result['n_calibration']} "
                  f"calibration sentences.  Fully integer vs linears-only K-Means W4A4: "
                  f"{gap:+.4f} mean cosine (goal: within 0.01)."]
    return "\n".join(lines) + "\n"
