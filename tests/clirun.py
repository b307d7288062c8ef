"""Run the kllm command line in-process, as the CLI tests do."""

from kllm.cli import main


def run(capsys, *argv):
    """``kllm argv...`` -> ``(exit status, stdout, stderr)``."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
