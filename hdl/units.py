"""The registry of units: CLI name -> component class (and so its configuration class),
golden twin, bench and synthesis options."""

import sys
from dataclasses import dataclass

from base.config import UnitConfig
from base.errors import KllmError
from hdl.core import KllmCore
from hdl.imu import Imu, ImuBaseline
from hdl.lut import ElementwiseLut
from hdl.norm import HistogramNorm, NormBaseline
from hdl.orizuru import Orizuru, OrizuruBaseline
from hdl.product import ProductTable
from hdl.quantizer import ActivationQuantizer
from hdl.rowengine import RowEngine
from hdl.softmax import HistogramSoftmax, SoftmaxBaseline

__all__ = ["Unit", "UNITS", "get_unit"]


@dataclass(frozen=True)
class Unit:
    name: str
    summary: str
    component: type     # the hdl/ class, a ConfiguredComponent built from its Config
    golden: str         # the golden twin's module (golden/), named, not imported here
    bench: str          # cocotb test module under testbench/
    synth_options: str = ""   # extra options of Yosys's synth_<family> for this unit
    # Yosys name pattern of submodules (below the unit's own module) that synthesis keeps
    # apart instead of flattening: each is mapped alone; the unit's figures are the totals
    # over its hierarchy (several patterns: separated by spaces)
    keep_modules: str = ""

    @property
    def config_cls(self):
        """The unit's configuration class (:mod:`base.config`)."""
        return self.component.Config

    def build(self, config: UnitConfig):
        """The component, built from ``config`` (passed as it is, not rebuilt); a check of the
        component's own (beyond the configuration's) becomes ``KllmError``."""
        try:
            return self.component(config)
        except (TypeError, ValueError) as e:
            raise KllmError(str(e)) from None

    def config(self, assignments=(), *, warn=True):
        """The checked configuration from ``--set`` strings; errors become ``KllmError``.

        A former parameter name (``config_cls.RENAMED``) is taken under its new name,
        with a one-line deprecation note on standard error (unless ``warn`` is false)."""
        renamed = []
        for item in assignments:
            name, sep, value = item.partition("=")
            new = self.config_cls.RENAMED.get(name.strip())
            if sep and new is not None:
                if warn:
                    print(f"kllm: warning: {self.name}: parameter '{name.strip()}' is now "
                          f"'{new}'; the old name is accepted until the next release",
                          file=sys.stderr)
                item = f"{new}={value}"
            renamed.append(item)
        try:
            return self.config_cls.from_strings(renamed)
        except (TypeError, ValueError) as e:
            raise KllmError(str(e)) from None

    @property
    def toplevel(self):
        """The top module's name with the default prefix (:func:`hdl.generate.generate`)."""
        return f"kllm_{self.name}"


# Orizuru's lanes and queues are 2:1 multiplexers behind flip-flop enables; with wide LUTs
# Yosys folds their select logic into every data bit (three LUT4s a bit instead of one).
# Both Orizuru and its baseline are synthesized with the same option.
NOWIDELUT = "-nowidelut"
# Both keep their compare-exchange modules (ce_modules=1) apart: the baseline's flat network
# at P=8, k=16 takes Yosys more than 30 minutes to map.
CE_MODULES = "ce_*"
# Orizuru also keeps its register copies apart (hdl.blocks.kept_register, `merge=2`):
# Yosys would merge them back into one flip-flop each.
ORIZURU_KEPT = f"{CE_MODULES} keep_*"     # keep_*: hdl.blocks.KEPT_MODULES
# The IMU keeps its per-lane register copies apart (hdl.blocks.kept_register and kept_logic:
# the host write enables, the broadcast centroids and bank selects, the tail's j and bank,
# the accumulator controls, the output stage's skid flag and enables).
IMU_KEPT = "keep_*"

UNITS = {u.name: u for u in [
    Unit("quantizer", "activation quantizer: fixed-point values -> nearest-centroid indices",
         ActivationQuantizer, "golden.quantizer", "testbench.test_quantizer"),
    Unit("orizuru", "streaming top-k: the k largest and k smallest values of each vector, "
         "with positions", Orizuru, "golden.orizuru", "testbench.test_orizuru",
         synth_options=NOWIDELUT, keep_modules=ORIZURU_KEPT),
    Unit("orizuru_baseline", "Orizuru's baseline: a full bitonic sorting network per cycle, "
         "pruned to k", OrizuruBaseline, "golden.orizuru",
         "testbench.test_orizuru", synth_options=NOWIDELUT, keep_modules=CE_MODULES),
    Unit("lut", "elementwise table: index -> index or fixed point (GELU, SiLU, exp), "
         "run-time loadable", ElementwiseLut, "golden.lut", "testbench.test_lut"),
    Unit("product", "binary product table: (index, index) -> entry of a 2^ba x 2^ba table "
         "(SwiGLU gate * up)", ProductTable, "golden.product", "testbench.test_product"),
    Unit("softmax", "softmax of rows of indices by histogram: exp table, normalized reciprocal, "
         "per-row remap", HistogramSoftmax, "golden.softmax", "testbench.test_softmax"),
    Unit("norm", "LayerNorm / RMSNorm of rows of indices by histogram: rsqrt table, per-row "
         "remap", HistogramNorm, "golden.norm", "testbench.test_norm"),
    Unit("softmax_baseline", "softmax's baseline: conventional fixed point, an exp table and a "
         "multiplier per lane", SoftmaxBaseline, "golden.softmax",
         "testbench.test_softmax"),
    Unit("norm_baseline", "norm's baseline: conventional fixed point, squares and a "
         "normalization multiply per lane", NormBaseline, "golden.norm",
         "testbench.test_norm"),

    Unit("imu", "Index MatMul unit: L output channels x P elements per cycle, bucket sums of "
         "activation centroids by weight index, 2**bw multiplies per output",
         Imu, "golden.imu", "testbench.test_imu", keep_modules=IMU_KEPT),
    Unit("imu_baseline", "IMU's baseline: dequantize both operands and multiply-accumulate, "
         "one multiplier per MAC", ImuBaseline, "golden.imu",
         "testbench.test_imu", keep_modules=IMU_KEPT),
    Unit("core", "the KLLM core: instruction fetch, load / compute / store engines with token "
         "semaphores, DMA over one AXI4 master, AXI4-Lite control", KllmCore, "golden.interp",
         "testbench.test_core"),
    Unit("rowengine", "the core's row engine: ROWOP (LUT, SOFTMAX, NORM) and ADD on ABUF rows, "
         "tables and affines from TBUF", RowEngine, "golden.core_ops", "testbench.test_rowengine"),
]}


def get_unit(name) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise KllmError(f"unknown unit '{name}' (units: {', '.join(UNITS)})") from None
