"""kllm sida: one-line errors for bad arguments, before any work is done."""

import pytest

from kllm.cli import main


def run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args,message", [
    (["--experts", "7"], "--experts must be an integer >= 2 dividing the FFN width 1536, got 7"),
    (["--k", "0"], "--k must be in 1..--experts (16), got 0"),
    (["--k", "17"], "--k must be in 1..--experts (16), got 17"),
    (["--capacity", "0"], "--capacity must be >= 1 expert, got 0"),
    (["--bandwidth", "0"], "--bandwidth must be > 0 bytes per cycle, got 0.0"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--hidden", "7"], "--hidden must be even and >= 2, got 7"),
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
