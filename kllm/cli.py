"""The ``kllm`` command line: list units, generate Verilog, simulate, lint, synthesize, demo.

The top layer.  Each command imports what it runs inside its own function (torch for
``eval`` and ``sida``, the FPGA flow for ``synth``), so ``kllm --help`` and a bad
argument answer at once.
"""

import argparse
import json
import sys
from pathlib import Path

from kllm import KllmError, __version__
from hdl.units import UNITS, get_unit

SIMS = ("icarus", "verilator")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, exit status 2, like every other error of the tool
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _console():
    from rich.console import Console
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def cmd_units(args):
    from rich.table import Table
    table = Table(title="KLLM-HDL units (set parameters with --set NAME=VALUE)")
    for col in ("unit", "parameter", "default", "range", "meaning"):
        table.add_column(col, justify="right" if col in ("default", "range") else "left")
    for unit in UNITS.values():
        table.add_row(f"[bold]{unit.name}[/bold]", "", "", "", unit.summary)
        for n, d, lo, hi, doc in unit.config_cls.params():
            table.add_row("", n, str(d), f"{lo}..{hi}", doc)
    _console().print(table)


def cmd_verilog(args):
    from hdl.generate import check_prefix, emit
    unit = get_unit(args.unit)
    config = unit.config(args.set)
    check_prefix(args.name)
    out = Path(args.output or f"build/verilog/{unit.name}")
    v, j = emit(unit, config, out, prefix=args.name)
    print(f"wrote {v} and {j} ({config.describe()})")


def latency_line(lc):
    """The bench's latency check in words; the bench names its formula when it is not
    ``n + latency`` (row units: a sum over the rows)."""
    label = lc.get("formula_text", "n + latency")
    return (f"latency: {lc['beats']} beats back to back took {lc['cycles']} cycles "
            f"(formula {label} = {lc['formula']})")


def cmd_sim(args):
    from kllm.sim import check_simulator, run_bench
    unit = get_unit(args.unit)
    config = unit.config(args.set)
    check_simulator(args.sim)
    if args.beats < 1:
        raise KllmError(f"--beats must be at least 1, got {args.beats}")
    build = Path(args.build_dir or f"build/sim/{unit.name}/{args.sim}/{config.describe()}")
    env = {"KLLM_BEATS": str(args.beats)}
    console = _console()
    with console.status(f"{args.sim}: building and simulating {unit.name} ({config.describe()})"):
        try:
            r = run_bench(unit, config, args.sim, build, waves=args.waves, seed=args.seed,
                          extra_env=env, quiet=not args.verbose, fast_build=args.fast_build or None)
        except AssertionError as e:
            raise KllmError(str(e)) from None
    console.print(f"{unit.name} on {args.sim}: [green]{r['tests']} cocotb tests passed[/green], "
                  f"{r['cycles']} cycles in {r['test_wall_s']:.2f} s of test time "
                  f"({r['cycles_per_s']:.0f} cycles/s), build {r['build_s']:.1f} s")
    if r.get("latency_check"):
        console.print(latency_line(r["latency_check"]))
    if args.waves:
        console.print(f"waves: {r['waves']}")
    console.print(f"results: {build / 'result.json'}")


def cmd_lint(args):
    from fpga.lint import EXPECTED, lint
    from hdl.generate import emit
    from kllm.sim import _path_with_venv
    unit = get_unit(args.unit)
    config = unit.config(args.set)
    out = Path(args.output or f"build/lint/{unit.name}")
    v, _ = emit(unit, config, out)
    result = lint(v, _path_with_venv())
    for line in result.errors:
        print(line)
    for kind, lines in sorted(result.warnings.items()):
        note = f"expected: {EXPECTED[kind]}" if kind in EXPECTED else "UNEXPECTED"
        print(f"{kind}: {len(lines)} ({note})")
        if args.verbose or kind not in EXPECTED:
            for line in lines:
                print(f"  {line}")
    n = sum(len(lines) for lines in result.warnings.values())
    print(f"verilator --lint-only -Wall {v.name}: {len(result.errors)} error(s), {n} warning(s) "
          f"of {len(result.warnings)} kind(s), {len(result.unexpected)} unexpected")
    if result.failed:
        return 1
    if args.strict and result.unexpected:
        print(f"--strict: unexpected warning kinds: {', '.join(result.unexpected)}")
        return 1
    return 0


def _synth_table(rows):
    from rich.table import Table
    table = Table(title="synthesis (unit's own cells; Fmax of the placed harness, median over seeds)")
    for col in ("unit", "configuration", "device", "LUT4", "FF", "LUTRAM", "DSP", "EBR",
                "Fmax MHz", "seeds"):
        table.add_column(col, justify="left" if col in ("unit", "configuration", "device") else "right")
    for s in rows:
        r = s["unit_resources"]
        grade = f" (speed {s['speed_grade']})" if s.get("speed_grade") else ""
        table.add_row(s["unit"], ",".join(f"{k}={v}" for k, v in s["config"].items()),
                      s["device"] + grade,
                      str(r["LUT4"]), str(r["FF"]), str(r["LUTRAM"]), str(r["DSP"]), str(r["EBR"]),
                      f"{s['fmax_mhz_median']:.1f}", str(len(s["fmax_mhz_by_seed"])))
    return table


def cmd_synth(args):
    from fpga.flow import synthesize
    unit = get_unit(args.unit)
    config = unit.config(args.set)
    out = Path(args.output or f"build/synth/{unit.name}/{args.device}/{config.describe()}")
    console = _console()
    with console.status("synthesizing") as status:
        summary = synthesize(unit, config, args.device, out, seeds=args.seeds, freq=args.freq,
                             speed=args.speed, progress=lambda t: status.update(t),
                             place=not args.no_place)
    if args.no_place:
        console.print(f"{unit.name} ({config.describe()}), Yosys only: {summary['unit_resources']}")
        console.print(f"report: {out / 'synth.json'}")
        return
    console.print(_synth_table([summary]))
    console.print(f"Fmax by seed: {summary['fmax_mhz_by_seed']}; placed design incl. harness: "
                  f"{summary['placed_total']}")
    console.print(f"report: {out / 'synth.json'}")


def cmd_sweep(args):
    from fpga.sweep import parse_grid, sweep, write_report
    unit = get_unit(args.unit)
    if not args.vary:
        raise KllmError("sweep needs at least one --vary NAME=V1,V2,...")
    if args.seeds < 1:
        raise KllmError(f"--seeds must be at least 1, got {args.seeds}")
    varied, configs = parse_grid(unit, args.set, args.vary)
    out = Path(args.output or f"build/sweep/{unit.name}/{args.device}")
    console = _console()
    with console.status("sweeping") as status:
        rows = sweep(unit, configs, args.device, out, seeds=args.seeds, speed=args.speed,
                     progress=lambda t: status.update(t))
    grade = f" speed {rows[0]['speed_grade']}" if rows and rows[0]["speed_grade"] else ""
    table = write_report(rows, varied, out,
                         f"{unit.name} on {args.device}{grade}, {args.seeds} seed(s)")
    console.print(table)
    console.print(f"wrote {out / 'sweep.md'}, {out / 'sweep.json'}, {out / 'sweep.png'}")


def cmd_eval(args):
    """Accuracy of the quantization schemes on all-MiniLM-L6-v2 and real text."""
    import torch

    from golden.eval import bits_sweep, evaluate, nonlinear_errors, write_report
    if args.sentences < 10 or args.calibration < 8:
        raise KllmError("--sentences must be >= 10 and --calibration >= 8")
    torch.set_num_threads(args.threads)
    out = Path(args.output or "build/eval")
    console = _console()
    sweep = [] if args.no_sweep else bits_sweep()
    if args.set and not args.integer:
        raise KllmError("--set applies to --integer (the integer model's settings)")
    if args.integer:
        from base.files import write_files
        from golden.eval import integer_comparison, integer_markdown
        from golden.intmodel import int_config
        try:
            icfg = int_config(args.set)
        except ValueError as e:
            raise KllmError(str(e)) from None
        with console.status("integer model") as status:
            result = integer_comparison(args.sentences, args.calibration,
                                        progress=lambda t: status.update(t), cfg=icfg,
                                        cache_dir=Path("build/cache"))
        table = integer_markdown(result)
        write_files(out, {"integer.md": table, "integer.json": json.dumps(result, indent=2) + "\n"})
        console.print(table)
        console.print(f"wrote {out / 'integer.md'}, {out / 'integer.json'}")
        return
    if args.nonlinear_only:
        from golden.eval import nonlinear_markdown
        with console.status("nonlinear units on real activations"):
            table = nonlinear_markdown(nonlinear_errors())
        console.print(table)
        return
    with console.status("evaluating") as status:
        result = evaluate(args.sentences, args.calibration, sweep=sweep,
                          progress=lambda t: status.update(t))
        status.update("nonlinear units on real activations")
        result["nonlinear"] = nonlinear_errors()
    table = write_report(result, out)
    console.print(table)
    console.print(f"wrote {out / 'eval.md'}, {out / 'eval.json'}, {out / 'accuracy_vs_bits.png'}")


def cmd_demo(args):
    """Default quantizer through the whole flow: Verilog, cocotb vs golden, ECP5 place-and-route."""
    from rich.table import Table

    from fpga.flow import synthesize
    from hdl.generate import emit
    from kllm.sim import run_bench

    unit = get_unit("quantizer")
    config = unit.config([])
    root = Path(args.output or "build/demo")
    console = _console()
    console.print(f"[bold]KLLM-HDL demo[/bold]: {unit.name} ({config.describe()})")
    with console.status("[1/3] generating Verilog"):
        v, j = emit(unit, config, root / "verilog")
    console.print(f"[1/3] Verilog: {v}")
    with console.status(f"[2/3] cocotb on {args.sim}: bench against the golden model"):
        try:
            sim = run_bench(unit, config, args.sim, root / "sim", quiet=True,
                            extra_env={"KLLM_BEATS": str(args.beats)})
        except AssertionError as e:
            raise KllmError(str(e)) from None
    lc = sim["latency_check"]
    console.print(f"[2/3] {args.sim}: {sim['tests']} tests passed bit-exact against the golden "
                  f"model; {lc['beats']} beats in {lc['cycles']} cycles (formula {lc['formula']})")
    with console.status("[3/3] Yosys + nextpnr (the first YoWASP run on a machine compiles "
                        "WebAssembly, about 30 s)") as status:
        syn = synthesize(unit, config, args.device, root / "synth", seeds=args.seeds,
                         progress=lambda t: status.update(f"[3/3] {t}"))
    console.print(f"[3/3] {args.device}: placed, Fmax {syn['fmax_mhz_median']:.1f} MHz")

    table = Table(title="KLLM-HDL demo")
    for col in ("unit", "configuration", "cycles", "LUT4", "FF", "LUTRAM", "DSP", "EBR", "Fmax"):
        table.add_column(col, justify="left" if col in ("unit", "configuration") else "right")
    r = syn["unit_resources"]
    table.add_row(unit.name, config.describe(),
                  f"{lc['cycles']} for {lc['beats']} beats", str(r["LUT4"]), str(r["FF"]),
                  str(r["LUTRAM"]), str(r["DSP"]), str(r["EBR"]),
                  f"{syn['fmax_mhz_median']:.1f} MHz ({args.device})")
    console.print(table)

    # the core: a short sentence through one encoder layer (the interpreter engine until the
    # RTL's compute engine is in), the integer model fitted on a few sentences for speed
    from kllm.run import run_sentence
    import torch
    torch.set_num_threads(2)
    core = get_unit("core").config([])
    with console.status("[4/4] the KLLM core: one MiniLM layer (integer model fitted once, "
                        "then cached)") as status:
        run = run_sentence(DEMO_SENTENCE, layers=1, engine="model", config=core,
                           calibration=DEMO_CALIBRATION, cache_dir=Path("build/cache"),
                           out_dir=root / "run", progress=lambda t: status.update(f"[4/4] {t}"))
    console.print(f"[4/4] KLLM core, {run['tokens']} tokens x 1 layer on the interpreter: "
                  f"{run['cycles']} cycles, output {'equals' if run['equals_integer_model'] else 'DIFFERS FROM'} "
                  f"the integer model bit for bit, cosine to FP32 {run['cosine_to_fp32']:.4f}, "
                  f"IMU MAC utilization {100 * run['imu_mac_utilization']:.1f}%")
    (root / "demo.json").write_text(json.dumps({"sim": sim, "synth": syn, "core": run},
                                               indent=2) + "\n")
    console.print(f"details: {root / 'demo.json'}")
    return 0 if run["equals_integer_model"] else 1


DEMO_SENTENCE = "The quick brown fox jumps over the lazy dog."
DEMO_CALIBRATION = 32


def cmd_sida(args):
    """SiDA expert prefetching on the MoE made from MiniLM: table + plot into build/sida."""
    import torch

    from golden.sida_eval import run, write_report
    checks = [("--experts", args.experts >= 2 and 1536 % args.experts == 0,
               "an integer >= 2 dividing the FFN width 1536"),
              ("--k", 1 <= args.k <= args.experts, f"in 1..--experts ({args.experts})"),
              ("--capacity", args.capacity >= 2,
               ">= 2 experts (prefetching streams a batch's experts through at least two slots)"),
              ("--bandwidth", args.bandwidth > 0, "> 0 bytes per cycle"),
              ("--shift", args.shift >= 0, ">= 0"), ("--outlier-beats", args.outlier_beats >= 0,
                                                    ">= 0"),
              ("--batch", args.batch >= 1, ">= 1"),
              ("--sentences", args.sentences >= 2, ">= 2"),
              ("--calibration", args.calibration is None or args.calibration >= 8, ">= 8"),
              ("--epochs", args.epochs >= 1, ">= 1"), ("--threads", args.threads >= 1, ">= 1"),
              ("--hidden", args.hidden >= 2 and args.hidden % 2 == 0, "even and >= 2")]
    for name, ok, want in checks:
        if not ok:
            raise KllmError(f"{name} must be {want}, got {getattr(args, name[2:].replace('-', '_'))}")
    from golden.sida import DEFAULT_IMU, CycleModel
    # the IMU the cycle model stands for: golden.sida's default (16 x 4) with --set on top
    imu = get_unit("imu").config([f"{k}={v}" for k, v in DEFAULT_IMU.to_dict().items()]
                                 + args.set)
    try:        # the cycle model's own checks, before any work
        CycleModel(imu=imu, shift=args.shift, outlier_beats=args.outlier_beats, expert_bytes=1)
    except ValueError as e:
        raise KllmError(f"--shift/--outlier-beats: {e}") from None
    if args.predictor and not args.retrain:
        if not Path(args.predictor).exists():
            raise KllmError(f"--predictor {args.predictor} does not exist (add --retrain to "
                            f"train and save it there)")
        from golden.sida import read_predictor_file
        blob = read_predictor_file(args.predictor)  # a bad file fails now, not after the MoE
        if blob.get("experts") != args.experts:
            raise KllmError(f"predictor file {args.predictor} was made for experts "
                            f"{blob.get('experts')!r}, --experts is {args.experts}")
    torch.set_num_threads(args.threads)
    out = Path(args.output or "build/sida")
    console = _console()
    with console.status("SiDA") as status:
        def progress(text):
            status.update(text)
            console.log(text)
        result = run(out, experts=args.experts, k=args.k, capacity=args.capacity,
                     bandwidth=args.bandwidth, imu=imu, shift=args.shift, outlier_beats=args.outlier_beats,
                     batch=args.batch, sentences=args.sentences,
                     calibration=args.calibration, predictor=args.predictor,
                     retrain=args.retrain, epochs=args.epochs, hidden=args.hidden,
                     progress=progress)
        md = write_report(result, out)
    console.print(md)
    console.print(f"wrote {out / 'sida.md'}, {out / 'sida.json'}, {out / 'sida.png'} "
                  f"({result['seconds']:.0f} s)")


def cmd_run(args):
    """A sentence through encoder layers on the KLLM core: cosine, cycles, utilization."""
    import os

    import torch

    from kllm.run import ENGINES, run_sentence
    cores = os.cpu_count() or 1
    checks = [("--layers", 1 <= args.layers <= 6, "in 1..6 (MiniLM has six encoder layers)"),
              ("--calibration", 8 <= args.calibration <= 1000, "in 8..1000 sentences"),
              ("--threads", 1 <= args.threads <= 4 * cores, f"in 1..{4 * cores}"),
              ("--fmax", args.fmax is None or args.fmax > 0, "> 0 MHz")]
    for name, ok, want in checks:
        if not ok:
            raise KllmError(f"{name} must be {want}, got {getattr(args, name[2:])}")
    if not args.sentence.strip():
        raise KllmError("the sentence is empty")
    if args.sim not in ENGINES:
        raise KllmError(f"--sim must be one of {', '.join(ENGINES)}")
    config = get_unit("core").config(args.set)
    torch.set_num_threads(args.threads)
    console = _console()
    with console.status("kllm run") as status:
        def progress(text):
            status.update(text)
            console.log(text)
        r = run_sentence(args.sentence, layers=args.layers, engine=args.sim, config=config,
                         calibration=args.calibration, cache_dir=args.cache,
                         out_dir=args.output or "build/run", progress=progress, fmax_mhz=args.fmax)
    from rich.table import Table
    console.print(f"[bold]{r['tokens']} tokens x {r['layers']} layer(s) on {r['engine']}[/bold]: "
                  f"{r['instructions']} instructions, {r['cycles']} cycles")
    mark = "[green]yes[/green]" if r["equals_integer_model"] else "[red]NO[/red]"
    console.print(f"output equals the golden integer model bit for bit: {mark}")
    console.print(f"cosine of the sentence embedding to FP32 (same layers): "
                  f"{r['cosine_to_fp32']:.4f}")
    table = Table(title="unit utilization (busy cycles / all cycles)")
    for col in ("unit", "instructions", "busy cycles", "share"):
        table.add_column(col, justify="left" if col == "unit" else "right")
    for u in r["units"]:
        table.add_row(u["unit"], str(u["instructions"]), str(u["busy_cycles"]),
                      f"{100 * u['share']:.1f}%")
    console.print(table)
    console.print(f"IMU MAC utilization: {100 * r['imu_mac_utilization']:.1f}% of "
                  f"{config.outputs} x {config.elems} MACs/cycle")
    note = "" if args.fmax else " (no Fmax given: --fmax MHz from 'kllm synth core')"
    console.print(f"{r['tokens_per_s']:.0f} tokens/s at {r['tokens_per_s_at_mhz']:.0f} MHz{note}")
    console.print(f"details: {Path(args.output or 'build/run') / 'run.json'}, program listing "
                  f"in program.txt ({r['seconds']:.0f} s)")
    return 0 if r["equals_integer_model"] else 1


def cmd_bench(args):
    """Benchmarks that are too long for the tests: the core's IMU utilization vs bandwidth."""
    import torch

    from kllm.run import bench_bandwidth
    if args.target != "core":
        raise KllmError(f"unknown benchmark '{args.target}' (benchmarks: core)")
    try:
        bws = [int(b) for b in args.bandwidths.split(",")]
    except ValueError:
        raise KllmError(f"--bandwidths expects integers separated by commas, got "
                        f"{args.bandwidths!r}") from None
    for b in bws:
        if b < 1 or b > 32 or b & (b - 1):
            raise KllmError(f"--bandwidths: {b} is not a power of 2 in 1..32 bytes/cycle")
    if not 1 <= args.tokens <= 256:
        raise KllmError(f"--tokens must be in 1..256, got {args.tokens}")
    if not 1 <= args.layers <= 6:
        raise KllmError(f"--layers must be in 1..6, got {args.layers}")
    get_unit("core").config(args.set)             # bad --set: refused before any work
    torch.set_num_threads(2)
    console = _console()
    out = Path(args.output or "build/bench")
    with console.status("kllm bench core") as status:
        def progress(text):
            status.update(text)
            console.log(text)
        _, md = bench_bandwidth(bws, tokens=args.tokens, layers=args.layers, config_sets=args.set,
                                calibration=args.calibration, cache_dir=args.cache, out_dir=out,
                                progress=progress)
    console.print(md)
    console.print(f"wrote {out / 'core.md'}, {out / 'core.json'}, {out / 'core_bandwidth.png'}")


def _speed_argument(parser):
    """``--speed`` of synth and sweep (checked by ``fpga.flow.synthesize`` before any work)."""
    parser.add_argument("--speed", type=int, metavar="GRADE",
                        help="speed grade of nextpnr's timing model (ECP5: 6, 7 or 8; default "
                             "6, the slowest)")


def build_parser():
    from fpga.flow import DEVICES
    p = _Parser(prog="kllm", description="KLLM-HDL: generate, simulate and synthesize the RTL "
                "of an LLM accelerator on K-Means-quantized data.")
    p.add_argument("--version", action="version", version=f"kllm-hdl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           metavar="COMMAND")

    def unit_cmd(name, help, func):
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("unit", metavar="UNIT", help=f"one of: {', '.join(UNITS)}")
        s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="set a parameter (repeatable); 'kllm units' lists them")
        s.set_defaults(func=func)
        return s

    s = sub.add_parser("units", help="list the units with their parameters, defaults and ranges")
    s.set_defaults(func=cmd_units)

    s = unit_cmd("verilog", "write a unit's Verilog and its JSON description (config, ports)",
                 cmd_verilog)
    s.add_argument("-o", "--output", metavar="DIR", help="output directory "
                   "(default build/verilog/UNIT)")
    s.add_argument("--name", metavar="PREFIX", default="kllm_",
                   help="prefix of every module name in the netlist, helpers included "
                   "(default kllm_): netlists with different prefixes compile together")

    s = unit_cmd("sim", "run a unit's cocotb bench against the golden model", cmd_sim)
    s.add_argument("--sim", choices=SIMS, default="icarus", help="simulator (default icarus)")
    s.add_argument("--waves", action="store_true", help="record an FST waveform")
    s.add_argument("--beats", type=int, default=300, help="beats per stream test (default 300)")
    s.add_argument("--seed", type=int, help="cocotb random seed")
    s.add_argument("--build-dir", metavar="DIR", help="default build/sim/UNIT/SIM/CONFIG")
    s.add_argument("--fast-build", action="store_true",
                   help="Verilator: compile the model at -O0 (builds several times faster, "
                        "simulates slower; the test suite's setting)")
    s.add_argument("-v", "--verbose", action="store_true", help="show the simulator's output")

    s = unit_cmd("lint", "Verilator --lint-only -Wall on a unit's Verilog: errors fail (exit 1), "
                 "warnings grouped by kind", cmd_lint)
    s.add_argument("-o", "--output", metavar="DIR", help="default build/lint/UNIT")
    s.add_argument("--strict", action="store_true",
                   help="also fail (exit 1) on a warning kind the Verilog backend does not "
                   "always write")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="list every warning line, expected kinds too")

    s = unit_cmd("synth", "Yosys + nextpnr: utilization and Fmax (median over seeds)", cmd_synth)
    s.add_argument("--device", choices=list(DEVICES), default="ecp5-85k",
                   help="target device (default ecp5-85k)")
    s.add_argument("--seeds", type=int, default=3, help="nextpnr seeds 1..N (default 3)")
    s.add_argument("--freq", type=float, help="nextpnr target in MHz (default 300 ECP5, 100 iCE40)")
    _speed_argument(s)
    s.add_argument("--no-place", action="store_true",
                   help="Yosys only: the unit's resources, no place-and-route (no Fmax)")
    s.add_argument("-o", "--output", metavar="DIR", help="work directory "
                   "(default build/synth/UNIT/DEVICE/CONFIG)")

    s = unit_cmd("sweep", "synthesize a grid of configurations: table and plot", cmd_sweep)
    s.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a parameter to sweep (repeatable; the first is the plot's x axis)")
    s.add_argument("--device", choices=list(DEVICES), default="ecp5-85k")
    s.add_argument("--seeds", type=int, default=3)
    _speed_argument(s)
    s.add_argument("-o", "--output", metavar="DIR", help="default build/sweep/UNIT/DEVICE")

    s = sub.add_parser("eval", help="accuracy of K-Means vs uniform quantization on "
                       "all-MiniLM-L6-v2 with real text (table + plot)")
    s.add_argument("--sentences", type=int, default=500, help="evaluation sentences (default 500)")
    s.add_argument("--calibration", type=int, default=128,
                   help="calibration sentences, disjoint from the evaluation ones (default 128)")
    s.add_argument("--no-sweep", action="store_true", help="skip the accuracy-vs-bits sweep")
    s.add_argument("--nonlinear-only", action="store_true",
                   help="only the error table of the index-domain nonlinear units")
    s.add_argument("--integer", action="store_true",
                   help="only the core's fully integer model beside the linears-only K-Means "
                        "W4A4 rows (build/eval/integer.md)")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="with --integer: an integer-model setting (golden.intmodel.IntConfig, "
                        "e.g. ln_outliers=8, sm_ba=6)")
    s.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    s.add_argument("-o", "--output", metavar="DIR", help="default build/eval")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("run", help="a sentence through MiniLM encoder layers on the KLLM core: "
                       "cosine to FP32, cycles, unit utilization, tokens/s")
    s.add_argument("sentence", help="the text (at most the core's max_tokens tokens)")
    s.add_argument("--layers", type=int, default=1, help="encoder layers, 1..6 (default 1)")
    s.add_argument("--sim", default="model", metavar="ENGINE",
                   help="model (the interpreter: bit-exact, cycle model), verilator or icarus "
                        "(the RTL) (default model)")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a core parameter (repeatable; 'kllm units' lists them)")
    s.add_argument("--calibration", type=int, default=128,
                   help="calibration sentences of the integer model (default 128; the fitted "
                        "model is cached)")
    s.add_argument("--cache", default="build/cache", metavar="DIR",
                   help="where fitted integer models are kept (default build/cache)")
    s.add_argument("--fmax", type=float, metavar="MHZ", help="clock for tokens/s (default: "
                   "100 MHz, stated)")
    s.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    s.add_argument("-o", "--output", metavar="DIR", help="default build/run")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("bench", help="long benchmarks (not tests): 'core' = the core's IMU "
                       "utilization against the external memory's bandwidth (table + plot)")
    s.add_argument("target", metavar="TARGET", help="core")
    s.add_argument("--bandwidths", default="2,4,8,16,32",
                   help="read bandwidths in bytes/cycle (default 2,4,8,16,32)")
    s.add_argument("--tokens", type=int, default=32, help="sentence length (default 32)")
    s.add_argument("--layers", type=int, default=1, help="encoder layers (default 1)")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a core parameter (repeatable)")
    s.add_argument("--calibration", type=int, default=128,
                   help="calibration sentences of the integer model (default 128, cached)")
    s.add_argument("--cache", default="build/cache", metavar="DIR")
    s.add_argument("-o", "--output", metavar="DIR", help="default build/bench")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="default quantizer: Verilog, cocotb vs golden, ECP5 "
                       "place-and-route, one table; then a sentence through one MiniLM layer on "
                       "the KLLM core")
    s.add_argument("--sim", choices=SIMS, default="icarus")
    s.add_argument("--device", choices=list(DEVICES), default="ecp5-85k")
    s.add_argument("--seeds", type=int, default=1)
    s.add_argument("--beats", type=int, default=200)
    s.add_argument("-o", "--output", metavar="DIR", help="default build/demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("sida", help="SiDA expert prefetching on an MoE made from MiniLM: "
                       "predictor, controller and cycle model over real text (table + plot)")
    s.add_argument("--experts", type=int, default=16, help="experts per FFN layer (default 16)")
    s.add_argument("--k", type=int, default=4, help="experts per token, top-k (default 4)")
    s.add_argument("--capacity", type=int, default=4,
                   help="weight buffer size in experts (default 4 = 25%% of a layer's 16)")
    s.add_argument("--bandwidth", type=float, default=8.0,
                   help="expert load bandwidth, bytes per cycle (default 8)")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="an IMU parameter of the cycle model (repeatable; 'kllm units' lists "
                   "them; default outputs=16, elems=4)")
    s.add_argument("--shift", type=int, default=3, help="activation shift, tail doublings per "
                   "token and tile (default 3, the shift of layer 1's FFN input)")
    s.add_argument("--outlier-beats", type=int, default=16, help="outlier beats per token and "
                   "tile (default 16: 8 outliers per side)")
    s.add_argument("--batch", type=int, default=1, help="sentences per batch (default 1)")
    s.add_argument("--sentences", type=int, default=200,
                   help="evaluation sentences (default 200)")
    s.add_argument("--calibration", type=int, default=None,
                   help="calibration sentences for training the predictor (default: all 1303)")
    s.add_argument("--predictor", metavar="FILE",
                   help="predictor file (default build/sida/predictor-E<experts>-k<k>-h<hidden>-"
                   "e<epochs>-c<calibration>.pt, trained and saved when missing)")
    s.add_argument("--retrain", action="store_true", help="train the predictor even if the "
                   "file exists, and overwrite it")
    s.add_argument("--epochs", type=int, default=40, help="predictor training epochs (default 40)")
    s.add_argument("--hidden", type=int, default=128, help="predictor hidden size (default 128)")
    s.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    s.add_argument("-o", "--output", metavar="DIR", help="default build/sida")
    s.set_defaults(func=cmd_sida)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KllmError as e:
        sys.stderr.write(f"kllm: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("kllm: interrupted\n")
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
