"""``kllm run``: a sentence through MiniLM encoder layers on the KLLM core.

Tokenize on the host, fit (or read from the cache) the integer model, compile the
sentence into a program, run it on an engine -- the interpreter (``model``) or the RTL
on a simulator -- and report the embedding's cosine to FP32, the cycles, each unit's
utilization and tokens/s.
"""

import copy
import json
import time
from pathlib import Path

import torch

from base.errors import KllmError
from base.files import write_files
from base.isa import Op, RowKind

__all__ = ["utilization", "run_sentence", "ENGINES", "fp32_embedding"]

ENGINES = ("model", "verilator", "icarus")

#: The unit that executes each instruction kind, for the utilization table.
_UNIT_OF = {Op.MATMUL: "IMU (quantizer, Orizuru, requant)", Op.ADD: "add (residual)",
            (Op.ROWOP, RowKind.LUT): "LUT (GELU, quantize)",
            (Op.ROWOP, RowKind.SOFTMAX): "softmax", (Op.ROWOP, RowKind.NORM): "norm (LayerNorm)",
            Op.LOAD: "DMA read (LOAD)", Op.STORE: "DMA write (STORE)"}


def utilization(program, trace, cycles, config):
    """``(rows, mac_share)``: per unit, its busy cycles and share of ``cycles`` (an
    instruction's unit is busy from its start to its end); and the IMU's MAC utilization
    (MACs done / (cycles x L x P))."""
    busy, count = {}, {}
    macs = 0
    for k, engine, start, end in trace:
        ins = program.instrs[k]
        key = (ins.op, ins.sub) if ins.op == Op.ROWOP else ins.op
        unit = _UNIT_OF.get(key)
        if unit is None:
            continue
        busy[unit] = busy.get(unit, 0) + end - start + 1
        count[unit] = count.get(unit, 0) + 1
        if ins.op == Op.MATMUL:
            macs += ins.args["tokens"] * ins.args["k"] * ins.args["lanes"]
    rows = [(u, count[u], busy[u], busy[u] / max(1, cycles)) for u in _UNIT_OF.values() if u in busy]
    return rows, macs / max(1, cycles * config.outputs * config.elems)


def fp32_embedding(model, sentence, layers):
    """The FP32 sentence embedding after ``layers`` encoder layers (pooled, normalized)."""
    m = copy.copy(model)
    m.layers = layers
    return m.embed([sentence])[0]


def _pool(x):
    return torch.nn.functional.normalize(x.mean(0), dim=-1).float()


def run_sentence(sentence, *, layers, engine, config, calibration, cache_dir, out_dir,
                 progress=None, fmax_mhz=None, sim_build=None, max_cycles=200_000_000):
    from golden.compiler import compile_sentence
    from golden.interp import Interpreter
    from golden.intmodel import IntConfig, cached_build, embeddings
    from golden.minilm import load_minilm

    say = progress or (lambda text: None)
    t0 = time.perf_counter()
    model = load_minilm()
    if not sentence.strip():
        raise KllmError("the sentence is empty")
    T = len(model.tokenizer.encode(sentence).ids)
    if T > config.max_tokens:
        raise KllmError(f"the sentence has {T} tokens; the core takes at most "
                        f"{config.max_tokens} (--set max_tokens=..., abuf_kb=...)")
    say(f"integer model (fitted on {calibration} calibration sentences, cached)")
    # the RTL's NORM takes no outliers yet: its integer model fits LayerNorm without them
    icfg = IntConfig() if engine == "model" else IntConfig(ln_outliers=0)
    im = cached_build(cache_dir, calibration, icfg, progress=say,
                      layers=None if layers == 6 else layers)
    emb = embeddings(model, sentence)
    say(f"compiling {T} tokens x {layers} layer(s)")
    image = compile_sentence(im, emb, config, layers)
    say(f"running {len(image.program.instrs)} instructions on {engine}")
    t1 = time.perf_counter()
    if engine == "model":
        r = Interpreter(config).run(bytearray(image.dram), image.prog_addr, max_cycles=max_cycles)
        if r.error:
            raise KllmError(f"the program ended with error {r.error}: {r.message}")
        dram, cycles, trace = r.dram, r.cycles, r.trace
        counters = {"busy": r.busy, "stalls": r.stalls}
    else:
        # the RTL under a simulator: the image in an AxiRam, the core started over AXI4-Lite
        # (testbench/test_core_image.py); the interpreter's run gives the trace, and the
        # RTL's counters must equal it (cycle-exact) as every byte of its memory must
        import tempfile

        from kllm.sim import run_core_image
        r = Interpreter(config).run(bytearray(image.dram), image.prog_addr, max_cycles=max_cycles)
        if r.error:
            raise KllmError(f"the program ended with error {r.error}: {r.message}")
        build = Path(sim_build or (Path(out_dir) / f"sim_{engine}" if out_dir else
                                   tempfile.mkdtemp(prefix="kllm-run-")))
        say(f"{engine}: building the core and running {r.cycles} cycles")
        rtl = run_core_image(config, engine, build, image.dram, image.prog_addr, check=True,
                             max_cycles=20 * r.cycles + 4000, fast_build=False)
        if rtl["error"]:
            raise KllmError(f"the program ended with error {rtl['error']} on {engine}")
        dram, cycles, trace = rtl["dram"], rtl["counters"]["cycles"], r.trace
        counters = {"busy": {e: rtl["counters"][f"busy_{e}"] for e in r.busy},
                    "stalls": {e: rtl["counters"][f"stall_{e}"] for e in r.stalls},
                    "sim_cycles_per_s": rtl["cycles_per_s"], "sim_wall_s": rtl["wall_s"],
                    "build_s": rtl["build_s"]}
    run_s = time.perf_counter() - t1
    out = image.output(dram)
    golden = im.forward(emb, layers)
    exact = bool(torch.equal(out, golden))
    x = out.double() * im.scale_after(layers)
    cos = float((_pool(x) * fp32_embedding(model, sentence, layers)).sum())
    units, mac_share = utilization(image.program, trace, cycles, config)
    result = {
        "sentence": sentence, "tokens": T, "layers": layers, "engine": engine,
        "config": config.to_dict(), "instructions": len(image.program.instrs),
        "instruction_counts": image.program.counts(), "cycles": cycles,
        "equals_integer_model": exact, "cosine_to_fp32": cos,
        "units": [{"unit": u, "instructions": n, "busy_cycles": b, "share": s}
                  for u, n, b, s in units],
        "imu_mac_utilization": mac_share, "counters": counters,
        "fmax_mhz": fmax_mhz, "run_seconds": run_s,
        "seconds": time.perf_counter() - t0,
    }
    f = fmax_mhz or 100.0
    result["tokens_per_s"] = T * f * 1e6 / cycles
    result["tokens_per_s_at_mhz"] = f
    if out_dir:
        write_files(Path(out_dir), {"run.json": json.dumps(result, indent=2) + "\n",
                                    "program.txt": image.program.listing() + "\n"})
    return result


def pick_sentence(model, tokens):
    """The first evaluation sentence of exactly ``tokens`` tokens (else the longest shorter)."""
    from golden.text import evaluation_sentences
    best = None
    for s in evaluation_sentences():
        n = len(model.tokenizer.encode(s).ids)
        if n == tokens:
            return s
        if n < tokens and (best is None or n > best[0]):
            best = (n, s)
    if best is None:
        raise KllmError(f"no evaluation sentence has {tokens} tokens or fewer")
    return best[1]


def bench_bandwidth(bandwidths, *, tokens, layers, config_sets, calibration, cache_dir, out_dir,
                    progress=None):
    """IMU utilization of ``layers`` layers of a ``tokens``-token sentence against the
    external memory's read bandwidth (bytes per cycle): the configured bus, with a memory
    that delivers a beat every bus/bandwidth cycles (the interpreter's cycle model).  Returns the result dict; writes JSON, markdown and a plot."""
    from golden.compiler import compile_sentence
    from golden.interp import Interpreter
    from golden.intmodel import IntConfig, cached_build, embeddings
    from golden.minilm import load_minilm
    from hdl.units import get_unit

    say = progress or (lambda text: None)
    model = load_minilm()
    sentence = pick_sentence(model, tokens)
    im = cached_build(cache_dir, calibration, IntConfig(), progress=say,
                      layers=None if layers == 6 else layers)
    emb = embeddings(model, sentence)
    rows = []
    for bw in bandwidths:
        config = get_unit("core").config(list(config_sets))
        bus = config.bus_bytes
        if bus % bw:
            raise KllmError(f"bandwidth {bw} B/cycle: use a power of 2 up to the bus "
                            f"({bus} bytes)")
        image = compile_sentence(im, emb, config, layers)
        say(f"{bw} B/cycle: {len(image.program.instrs)} instructions")
        t0 = time.perf_counter()
        r = Interpreter(config, read_beat_cycles=bus // bw).run(
            bytearray(image.dram), image.prog_addr, max_cycles=500_000_000)
        if r.error:
            raise KllmError(f"{bw} B/cycle: the program ended with error {r.error}: {r.message}")
        units, mac = utilization(image.program, r.trace, r.cycles, config)
        imu = next((b for u, n, b, s in units if u.startswith("IMU")), 0)
        rows.append({"bandwidth": bw, "bus_bytes": bus, "cycles": r.cycles,
                     "imu_busy": imu / r.cycles, "mac_utilization": mac,
                     "load_busy": r.busy["load"] / r.cycles,
                     "equals_integer_model": bool(torch.equal(image.output(r.dram),
                                                              im.forward(emb, layers))),
                     "model_seconds": time.perf_counter() - t0})
    result = {"sentence": sentence, "tokens": len(emb), "layers": layers,
              "config": config_sets, "rows": rows}
    lines = [f"{len(emb)}-token sentence, {layers} layer(s): IMU busy against the read "
             f"bandwidth (interpreter cycle model)", "",
             "| bytes/cycle | bus | cycles | IMU busy | MAC utilization | LOAD busy | exact |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bandwidth']} | {8 * r['bus_bytes']} bit | {r['cycles']} | "
                     f"{100 * r['imu_busy']:.1f}% | {100 * r['mac_utilization']:.1f}% | "
                     f"{100 * r['load_busy']:.1f}% | {'yes' if r['equals_integer_model'] else 'NO'} |")
    md = "\n".join(lines) + "\n"
    out = Path(out_dir)
    write_files(out, {"core.json": json.dumps(result, indent=2) + "\n", "core.md": md})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["bandwidth"] for r in rows], [100 * r["imu_busy"] for r in rows], "o-",
            label="IMU busy")
    ax.plot([r["bandwidth"] for r in rows], [100 * r["mac_utilization"] for r in rows], "s--",
            label="MAC utilization")
    ax.axhline(85, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="external memory read bandwidth (bytes/cycle)", ylabel="% of cycles",
           title=f"KLLM core, {len(emb)} tokens x {layers} layer(s)", ylim=(0, 100))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "core_bandwidth.png", dpi=110)
    plt.close(fig)
    return result, md
