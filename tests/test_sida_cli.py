"""kllm sida: one-line errors for bad arguments, before any work is done."""

import pytest

from clirun import run


@pytest.mark.parametrize("args,message", [
    (["--experts", "7"], "--experts must be an integer >= 2 dividing the FFN width 1536, got 7"),
    (["--k", "0"], "--k must be in 1..--experts (16), got 0"),
    (["--k", "17"], "--k must be in 1..--experts (16), got 17"),
    (["--capacity", "1"], "--capacity must be >= 2 experts (prefetching streams a batch's "
                          "experts through at least two slots), got 1"),
    (["--bandwidth", "0"], "--bandwidth must be > 0 bytes per cycle, got 0.0"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--hidden", "7"], "--hidden must be even and >= 2, got 7"),
    (["--outlier-beats", "-1"], "--outlier-beats must be >= 0, got -1"),
    (["--set", "elems=3"], "imu: parameter 'elems' must be a power of 2 (a position splits "
                           "into weight-memory row and lane by bits), got 3"),
    (["--set", "rows=3"], "imu: unknown parameter 'rows' (parameters: outputs, elems, bw, ba, "
                          "cw, ca, k_max, outliers, xbits)"),
    (["--shift", "9"], "--shift/--outlier-beats: cycle model: shift must be in 0..8, got 9"),
])
def test_bad_arguments(capsys, tmp_path, args, message):
    rc, out, err = run(capsys, "sida", "-o", str(tmp_path / "o"), *args)
    assert rc == 2
    assert err.strip() == f"kllm: error: {message}"
    assert not (tmp_path / "o").exists()


def test_missing_predictor_file(capsys, tmp_path):
    rc, _, err = run(capsys, "sida", "-o", str(tmp_path / "o"), "--predictor",
                     str(tmp_path / "none.pt"))
    assert rc == 2 and "none.pt does not exist (add --retrain" in err
    assert not (tmp_path / "o").exists()


def test_not_a_number(capsys):
    rc, _, err = run(capsys, "sida", "--capacity", "four")
    assert rc == 2 and "argument --capacity: invalid int value: 'four'" in err


def test_corrupt_predictor_file_fails_before_any_work(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    rc, _, err = run(capsys, "sida", "-o", str(tmp_path / "o"), "--predictor", str(bad))
    assert rc == 2
    assert err.strip() == (f"kllm: error: predictor file {bad} is corrupt or not a predictor "
                           f"(UnpicklingError)")
    assert not (tmp_path / "o").exists()


def test_report_table_and_plot(tmp_path):
    """The report of a small synthetic run: every policy in the table, the plot written."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sida_controller import CM, random_trace

    from golden.sida import POLICIES, POLICY_NAMES, simulate
    from golden.sida_eval import write_report
    trace = random_trace(3, layers=2)
    rows = [simulate(trace, p, 32 if p == "resident" else 4, CM).row(CM) for p in POLICIES]
    by = {r["policy"]: r for r in rows}
    result = {
        "config": {"experts": 16, "k": 2, "capacity": 4, "bandwidth": 8.0,
                   "imu": CM.imu.to_dict(), "shift": 0, "outlier_beats": 0,
                   "latency": 12, "batch": 1, "sentences": 12, "layers": 2,
                   "neurons_per_expert": 96},
        "expert_bytes": CM.expert_bytes,
        "moe_quality": [{"rule": "norm", "k": 2, "active": 0.125, "cos_mean": 0.5,
                         "cos_min": 0.4}],
        "hit_rates": [0.5, 0.75],
        "quality": {"moe_cos_mean": 0.5, "hash_cos_mean": 0.45, "hash_cos_min": 0.3,
                    "relative_drop": 0.1},
        "policies": rows,
        "bandwidth_sweep": {1: {p: 1.0 for p in POLICIES}, 8: {p: 2.0 for p in POLICIES}},
        "capacity_sweep": {2: {p: 1.0 for p in POLICIES[1:]}, 4: {p: 2.0 for p in POLICIES[1:]}},
        "targets": {"buffer_share": 0.25, "sida_stall_share": by["sida"]["stall_share"],
                    "sida_stall_expert_share": by["sida"]["stall_expert_share"],
                    "sida_over_lru": by["sida"]["throughput"] / by["lru"]["throughput"],
                    "hash_over_lru": 1.0},
        "seconds": 1.0,
    }
    md = write_report(result, tmp_path)
    for p in POLICIES:
        assert f"| {POLICY_NAMES[p]} | " in md
    assert "per layer: 50.0%, 75.0% (mean 62.5%)" in md
    assert (tmp_path / "sida.png").stat().st_size > 10000
    assert (tmp_path / "sida.json").exists()


def test_predictor_for_another_expert_count(capsys, tmp_path):
    import torch

    from golden.moe import MoESplit
    from golden.sida import HashPredictor, save_predictor
    split = MoESplit(tuple(torch.arange(1536).view(8, 192) for _ in range(6)))
    path = save_predictor(HashPredictor(6, 8, hidden=4), tmp_path / "p8.pt", split)
    rc, _, err = run(capsys, "sida", "-o", str(tmp_path / "o"), "--predictor", str(path))
    assert rc == 2
    assert err.strip() == f"kllm: error: predictor file {path} was made for experts 8, --experts is 16"
    assert not (tmp_path / "o").exists()
