"""The SiDA study behind ``kllm sida``: MoE quality, predictor hit rates, the four policies.

Everything runs on the real model and real text (calibration and evaluation
sentences disjoint, golden/text.py) and is measured in one run:

1. the MoE split of every FFN (cached under the output directory) and its
   quality, cosine of sentence embeddings to the dense model, per top-k;
2. the hash predictor, trained on the calibration sentences if no file is
   given or cached, and its per-layer top-k hit rate on evaluation text;
3. the quality of hash-routed mode against the all-resident MoE;
4. the cycle-accounted simulation of all policies over the evaluation
   sentences, plus sweeps of load bandwidth and buffer capacity for the plot.
"""

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from golden.minilm import load_minilm
from golden.moe import MoEHooks, MoESplit, cosine, moe_embed, quality, split_model
from golden.sida import (DEFAULT_IMU, POLICIES, POLICY_NAMES, CycleModel, collect_routing, hit_rates,
                         load_predictor, make_trace, predict_routing, quantize_experts,
                         save_predictor, simulate, token_embeddings, train_predictor)
from golden.text import calibration_sentences, evaluation_sentences

__all__ = ["load_split", "get_predictor", "run", "write_report"]


def load_split(model, experts, cache_dir):
    """The MoE split, from ``cache_dir/split-E{experts}.pt`` or computed and cached."""
    path = Path(cache_dir) / f"split-E{experts}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            split = MoESplit(tuple(blob["groups"]))
            if split.experts == experts and split.fingerprint() == blob["fingerprint"]:
                return split
        except Exception:
            pass                                    # stale or damaged cache: recompute
    split = split_model(model, experts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # atomic: readers never see half
    torch.save({"groups": list(split.groups), "fingerprint": split.fingerprint()}, tmp)
    os.replace(tmp, path)
    return split


def get_predictor(model, split, path, *, k, calibration, retrain=False, epochs=40, hidden=128,
                  progress=print):
    """Load the predictor at ``path``, or train it on calibration text and save it there."""
    path = Path(path)
    if path.exists() and not retrain:
        progress(f"loading predictor {path}")
        return load_predictor(path, split), False
    cal = calibration_sentences(calibration)
    progress(f"predictor {path} missing: collecting the true routing of {len(cal)} "
             f"calibration sentences")
    routing, _ = collect_routing(model, split, cal, k)
    net = train_predictor(model, split, cal, routing, k=k, hidden=hidden, epochs=epochs,
                          progress=progress)
    save_predictor(net, path, split)
    return net, True


def _hash_quality(model, split, net, sentences, k, dense):
    def routing(batch):
        return net.route(token_embeddings(model, batch), batch.attention_mask, k)
    emb, _ = moe_embed(model, sentences, MoEHooks(model, split, k=k, routing=routing))
    return cosine(emb, dense)


def run(out, *, experts=16, k=4, capacity=4, bandwidth=8.0, imu=DEFAULT_IMU,
        shift=3, outlier_beats=16, batch=1, sentences=200, calibration=None, predictor=None,
        retrain=False, epochs=40, hidden=128, ks=(1, 2, 4, 8), progress=print):
    out = Path(out)
    t0 = time.time()
    model = load_minilm()
    progress(f"splitting the FFNs into {experts} experts (cached in {out})")
    split = load_split(model, experts, out)
    ev = evaluation_sentences(sentences)
    n_cal = len(calibration_sentences(calibration))
    predictor = Path(predictor or out / f"predictor-E{experts}-k{k}-h{hidden}-e{epochs}-c{n_cal}.pt")
    net, trained = get_predictor(model, split, predictor, k=k, calibration=calibration,
                                 retrain=retrain, epochs=epochs, hidden=hidden, progress=progress)

    progress(f"MoE quality on {len(ev)} evaluation sentences, k = {', '.join(map(str, ks))}")
    dense = model.embed(ev)
    moe_rows = quality(model, split, ev, ks=sorted(set(ks) | {k}))

    progress("true and predicted routing of the evaluation text")
    true, moe_emb = collect_routing(model, split, ev, k)
    true = [r["experts"] for r in true]
    pred = predict_routing(model, net, ev, k)
    hits = hit_rates(pred, true)
    moe_cos = cosine(moe_emb, dense)
    hash_cos = _hash_quality(model, split, net, ev, k, dense)

    progress("quantizing an expert for its size")
    ew = quantize_experts(model, split, layers=[0], experts=[0])[0, 0]
    cm = CycleModel(imu=imu, shift=shift,
                    outlier_beats=outlier_beats, bandwidth=bandwidth,
                    hidden=model.hidden, neurons=split.neurons, experts=experts,
                    expert_bytes=ew.nbytes())
    trace = make_trace(true, pred, batch)
    all_slots = split.layers * experts

    def run_all(c, cap, tr=None):
        return {p: simulate(tr or trace, p, all_slots if p == "resident" else cap, c)
                for p in POLICIES}

    progress("cycle-accounted simulation of the policies")
    main = run_all(cm, capacity)
    rows = [main[p].row(cm) for p in POLICIES]
    bw_sweep = {}
    for bw in (1, 2, 4, 8, 16, 32, 64):
        c = replace(cm, bandwidth=float(bw))
        bw_sweep[bw] = {p: r.throughput for p, r in run_all(c, capacity).items()}
    cap_sweep = {}
    for cap in sorted({2, 4, 8, 16, 32, 48, capacity}):
        cap_sweep[cap] = {p: r.throughput for p, r in run_all(cm, cap).items()
                          if p != "resident"}
    batch_sweep = {}     # more tokens per expert step amortize the per-tile weight rewrite
    for b in sorted({1, 2, 4, 8, 16, batch}):
        batch_sweep[b] = {p: r.throughput
                          for p, r in run_all(cm, capacity, make_trace(true, pred, b)).items()}
    by = {r["policy"]: r for r in rows}
    result = {
        "config": {"experts": experts, "k": k, "capacity": capacity, "bandwidth": bandwidth,
                   "imu": imu.to_dict(), "shift": shift,
                   "outlier_beats": outlier_beats, "latency": imu.latency,
                   "batch": batch,
                   "sentences": len(ev), "calibration": n_cal, "predictor": str(predictor),
                   "trained_now": trained, "predictor_meta": net.meta, "rule": "norm",
                   "layers": split.layers, "neurons_per_expert": split.neurons},
        "expert_bytes": cm.expert_bytes,
        "moe_quality": moe_rows,
        "hit_rates": hits,
        "quality": {"moe_cos_mean": float(moe_cos.mean()), "hash_cos_mean": float(hash_cos.mean()),
                    "hash_cos_min": float(hash_cos.min()),
                    "relative_drop": 1 - float(hash_cos.mean()) / float(moe_cos.mean())},
        "policies": rows,
        "bandwidth_sweep": bw_sweep,
        "capacity_sweep": cap_sweep,
        "batch_sweep": batch_sweep,
        "targets": {
            "buffer_share": capacity / experts,
            "sida_stall_share": by["sida"]["stall_share"],
            "sida_stall_expert_share": by["sida"]["stall_expert_share"],
            "sida_over_lru": by["sida"]["throughput"] / by["lru"]["throughput"],
            "hash_over_lru": by["sida-hash"]["throughput"] / by["lru"]["throughput"],
        },
        "seconds": round(time.time() - t0, 1),
    }
    return result


def _md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


POLICY_HEAD = ("policy", "buffer (experts / KiB)", "tokens / 1k cycles", "cycles / token",
               "stall cycles", "stall / compute", "stall / expert compute", "loads (wasted)",
               "MB moved", "hit rate")


def policy_rows(result):
    out = []
    for r in result["policies"]:
        out.append((r["name"], f"{r['capacity']} / {r['buffer_kib']:.0f}",
                    f"{r['throughput']:.5f}", f"{r['cycles'] / r['tokens']:.0f}",
                    f"{r['stall']:,}", f"{100 * r['stall_share']:.1f}%",
                    f"{100 * r['stall_expert_share']:.1f}%",
                    f"{r['loads']} ({r['wasted']})",
                    f"{r['bytes'] / 1e6:.1f}" + (f" (+{r['fill_bytes'] / 1e6:.1f} fill)"
                                                 if r["fill_bytes"] else ""),
                    f"{100 * r['hit_rate']:.1f}%"))
    return out


def markdown(result):
    c = result["config"]
    q = result["quality"]
    t = result["targets"]
    parts = [
        f"MoE: {c['layers']} layers x {c['experts']} experts of {c['neurons_per_expert']} neurons, "
        f"top-{c['k']}; {c['sentences']} evaluation sentences; IMU L={c['imu']['outputs']} "
        f"P={c['imu']['elems']} k_max={c['imu']['k_max']} (latency {c['latency']}), per token and tile a shift of "
        f"{c.get('shift', 0)} and {c.get('outlier_beats', 0)} outlier beats, the weight memory "
        f"rewritten for every tile; loads {c['bandwidth']} B/cycle; expert "
        f"{result['expert_bytes']} B; batch {c['batch']} sentence(s).",
        "",
        "MoE quality (mean / min cosine of sentence embeddings to the dense model):",
        "",
        _md_table(("rule", "top-k", "active experts", "cos mean", "cos min"),
                  [(r["rule"], r["k"], f"{100 * r['active']:.0f}%", f"{r['cos_mean']:.4f}",
                    f"{r['cos_min']:.4f}") for r in result["moe_quality"]]),
        "",
        "Predictor top-k hit rate on evaluation text, per layer: "
        + ", ".join(f"{100 * h:.1f}%" for h in result["hit_rates"])
        + f" (mean {100 * sum(result['hit_rates']) / len(result['hit_rates']):.1f}%).",
        "",
        f"Hash-routed quality: cos {q['hash_cos_mean']:.4f} vs all-resident MoE "
        f"{q['moe_cos_mean']:.4f} (relative drop {100 * q['relative_drop']:.2f}%).",
        "",
        _md_table(POLICY_HEAD, policy_rows(result)),
        "",
        *_sweep_tables(result),
        f"Targets: buffer {100 * t['buffer_share']:.0f}% of a layer's experts; SiDA stalls "
        f"{100 * t['sida_stall_share']:.1f}% of compute, {100 * t['sida_stall_expert_share']:.1f}% "
        f"of expert compute (target < 10%); SiDA / LRU throughput "
        f"{t['sida_over_lru']:.2f}x, hash-routed / LRU {t['hash_over_lru']:.2f}x (target >= 2x); "
        f"hash-routed quality drop {100 * q['relative_drop']:.2f}% (target < 1%).",
    ]
    return "\n".join(parts) + "\n"


def _sweep_tables(result):
    """Tokens per 1k cycles against load bandwidth, buffer size and batch size."""
    out = []
    for key, label in (("bandwidth_sweep", "load bandwidth (B/cycle)"),
                       ("capacity_sweep", "buffer (experts)"),
                       ("batch_sweep", "batch (sentences)")):
        sweep = result.get(key)
        if not sweep:
            continue
        pols = [p for p in POLICIES if p in next(iter(sweep.values()))]
        rows = []
        for x in sorted(sweep, key=float):
            r = sweep[x]
            rows.append((x, *(f"{r[p]:.5f}" for p in pols),
                         f"{r['sida'] / r['lru']:.2f}x", f"{r['sida-hash'] / r['lru']:.2f}x"))
        out += [f"Tokens / 1k cycles against {label}:", "",
                _md_table((label, *(POLICY_NAMES[p] for p in pols), "SiDA / LRU",
                           "hash-routed / LRU"), rows), ""]
    return out


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    batches = result.get("batch_sweep")
    fig, axes = plt.subplots(1, 3 if batches else 2, figsize=(16 if batches else 11, 4.2))
    a, b = axes[0], axes[1]
    color = {p: f"C{i}" for i, p in enumerate(POLICIES)}
    bw = sorted(result["bandwidth_sweep"], key=float)
    for p in POLICIES:
        a.plot([float(x) for x in bw], [result["bandwidth_sweep"][x][p] for x in bw], "o-",
               color=color[p], label=POLICY_NAMES[p])
    a.set_xscale("log", base=2)
    a.set_xlabel("load bandwidth (bytes / cycle)")
    a.set_ylabel("tokens / 1k cycles")
    a.set_title(f"buffer {result['config']['capacity']} experts")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    caps = sorted(result["capacity_sweep"], key=int)
    for p in POLICIES[1:]:
        b.plot([int(x) for x in caps], [result["capacity_sweep"][x][p] for x in caps], "o-",
               color=color[p], label=POLICY_NAMES[p])
    res = [r for r in result["policies"] if r["policy"] == "resident"][0]["throughput"]
    b.axhline(res, color=color["resident"], ls="--", label=POLICY_NAMES["resident"])
    b.set_xscale("log", base=2)
    b.set_xlabel("buffer capacity (experts)")
    b.set_title(f"loads {result['config']['bandwidth']} B/cycle")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    if batches:
        c = axes[2]
        xs = sorted(batches, key=int)
        for p in POLICIES:
            c.plot([int(x) for x in xs], [batches[x][p] for x in xs], "o-", color=color[p],
                   label=POLICY_NAMES[p])
        c.set_xscale("log", base=2)
        c.set_xlabel("batch (sentences)")
        c.set_title("more tokens per expert step")
        c.grid(alpha=0.3)
        c.legend(fontsize=8)
    fig.suptitle("SiDA expert prefetching on the MiniLM MoE (cycle model, real text)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sida.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (out / "sida.md").write_text(md)
    plot(result, out / "sida.png")
    return md
