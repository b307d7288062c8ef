"""Parameter checks: every invalid parameter raises at construction, naming it."""

import pytest

from hdl.quantizer import ActivationQuantizer
from base.errors import KllmError
from base.config import QuantizerConfig
from hdl.units import UNITS, get_unit


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"width": 1}, ValueError, "quantizer: parameter 'width' must be in 2..32, got 1"),
    ({"width": 33}, ValueError, "quantizer: parameter 'width' must be in 2..32, got 33"),
    ({"ba": 0}, ValueError, "quantizer: parameter 'ba' must be in 1..8, got 0"),
    ({"ba": 9}, ValueError, "quantizer: parameter 'ba' must be in 1..8, got 9"),
    ({"elems": 0}, ValueError, "quantizer: parameter 'elems' must be in 1..16, got 0"),
    ({"elems": 17}, ValueError, "quantizer: parameter 'elems' must be in 1..16, got 17"),
    ({"elems": 2.0}, TypeError, "quantizer: parameter 'elems' must be an integer, not 2.0"),
    ({"ba": True}, TypeError, "quantizer: parameter 'ba' must be an integer, not True"),
    ({"width": "16"}, TypeError, "quantizer: parameter 'width' must be an integer, not '16'"),
])
def test_quantizer_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc) as e:
        ActivationQuantizer(**kwargs)
    assert str(e.value) == message


def test_quantizer_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        ActivationQuantizer(16, 4, 4)


def test_component_exposes_checked_config():
    q = ActivationQuantizer(width=12, ba=3, elems=2)
    assert q.config == QuantizerConfig(width=12, ba=3, elems=2)
    assert q.latency == 4
    assert q.config.n_thresholds == 7


def test_from_strings():
    assert QuantizerConfig.from_strings(["ba=3", "elems=0x8"]) == QuantizerConfig(ba=3, elems=8)
    with pytest.raises(ValueError, match="unknown parameter 'p' \\(parameters: width, ba, elems\\)"):
        QuantizerConfig.from_strings(["p=3"])
    with pytest.raises(ValueError, match="parameter 'ba' must be an integer, got 'four'"):
        QuantizerConfig.from_strings(["ba=four"])
    with pytest.raises(ValueError, match="--set expects name=value, got 'ba'"):
        QuantizerConfig.from_strings(["ba"])


def test_registry():
    assert "quantizer" in UNITS
    with pytest.raises(KllmError, match="unknown unit 'nope' \\(units: quantizer"):
        get_unit("nope")
    for unit in UNITS.values():
        # every default configuration builds
        assert unit.build(unit.config())
