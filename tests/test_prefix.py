"""Two configurations of a unit in one design: with ``--name``/``prefix`` every module of a
netlist, helpers included, carries the prefix, so the netlists compile together in one
Icarus and one Verilator build; with one prefix for both they clash."""

import shutil
import subprocess

import pytest

from hdl.generate import check_prefix, emit
from hdl.units import UNITS, get_unit
from kllm.sim import _path_with_venv

# two configurations of every unit (the second small where the default is large)
PAIRS = {
    "core": (["bus_bytes=8", "elems=2", "outputs=4", "ba=4", "row_ba=3", "lut_ba=4", "max_row=64",
              "max_tokens=16", "k_max=32", "abuf_kb=4", "tbuf_kb=4"],
             ["bus_bytes=8", "elems=2", "ba=3", "row_ba=2", "lut_ba=3", "max_row=32",
              "max_tokens=8", "k_max=16", "outputs=2", "abuf_kb=4", "tbuf_kb=4"]),
    "rowengine": (["bus_bytes=8", "elems=2", "max_row=16", "max_tokens=8", "row_ba=2",
                   "lut_ba=2", "abuf_kb=4", "tbuf_kb=4"],
                  ["bus_bytes=8", "elems=1", "max_row=16", "max_tokens=8", "row_ba=2",
                   "lut_ba=2", "abuf_kb=4", "tbuf_kb=4"]),
    "quantizer": ([], ["elems=2", "ba=3"]),
    "orizuru": ([], ["elems=2", "k=4", "max_len=64"]),
    "orizuru_baseline": ([], ["elems=2", "k=4", "max_len=64"]),
    "lut": ([], ["elems=1", "ba=2"]),
    "product": ([], ["elems=1", "ba=2"]),
    "softmax": ([], ["elems=1", "max_len=16"]),
    "norm": ([], ["elems=1", "max_len=16"]),
    "softmax_baseline": (["max_len=64"], ["elems=1", "max_len=16"]),
    "norm_baseline": ([], ["elems=1", "max_len=16"]),
    "imu": ([], ["outputs=2", "elems=2", "k_max=16"]),
    "imu_baseline": ([], ["outputs=2", "elems=2", "k_max=16"]),
}


def _netlists(tmp_path, prefixes):
    files = []
    for name, configs in PAIRS.items():
        unit = get_unit(name)
        for k, (params, prefix) in enumerate(zip(configs, prefixes)):
            v, _ = emit(unit, unit.config(params), tmp_path / f"{name}{k}", prefix=prefix)
            files.append(v)
    return files


def test_every_unit_has_a_pair():
    assert set(PAIRS) == set(UNITS)


def test_two_configurations_of_every_unit_compile_together(tmp_path):
    files = _netlists(tmp_path, ["a_", "b_"])
    text = files[-1].read_text()
    assert "module b_imu_baseline_bram" in text and "b_imu_baseline_mul" in text   # helpers
    iverilog = shutil.which("iverilog")
    r = subprocess.run([iverilog, "-g2012", "-o", str(tmp_path / "all.vvp"), *map(str, files)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    verilator = shutil.which("verilator", path=_path_with_venv())
    r = subprocess.run([verilator, "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                        *map(str, files)], capture_output=True, text=True)
    assert r.returncode == 0 and "%Error" not in r.stderr, r.stderr[-2000:]


def test_one_prefix_for_two_configurations_clashes(tmp_path):
    """What the prefixes prevent: the same module names declared twice."""
    unit = get_unit("imu")
    files = [emit(unit, unit.config(p), tmp_path / str(k))[0]
             for k, p in enumerate(PAIRS["imu"])]
    r = subprocess.run([shutil.which("iverilog"), "-o", str(tmp_path / "x.vvp"),
                        *map(str, files)], capture_output=True, text=True)
    assert r.returncode != 0 and "already" in r.stderr


@pytest.mark.parametrize("bad", ["", "1x", "a-b", "a b", "é_"])
def test_bad_prefix_is_refused(bad):
    from base.errors import KllmError
    with pytest.raises(KllmError, match="module name prefix must be a Verilog identifier"):
        check_prefix(bad)


def test_cli_name_option(capsys, tmp_path):
    from clirun import run
    rc, out, _ = run(capsys, "verilog", "quantizer", "--name", "mine_", "-o", str(tmp_path))
    assert rc == 0 and (tmp_path / "mine_quantizer.v").exists()
    assert "module mine_quantizer" in (tmp_path / "mine_quantizer.v").read_text()
    rc, _, err = run(capsys, "verilog", "quantizer", "--name", "9x", "-o", str(tmp_path / "b"))
    assert rc == 2 and "module name prefix must be a Verilog identifier" in err
    assert not (tmp_path / "b").exists()
