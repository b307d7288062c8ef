"""The registry of units: CLI name -> configuration, generator, bench."""

import importlib
from dataclasses import dataclass

from kllm import KllmError
from kllm.config import (ImuBaselineConfig, ImuConfig, LutConfig, NormBaselineConfig,
                         NormConfig, OrizuruBaselineConfig, OrizuruConfig, ProductConfig,
                         QuantizerConfig, SoftmaxBaselineConfig, SoftmaxConfig, UnitConfig)

__all__ = ["Unit", "UNITS", "get_unit"]


@dataclass(frozen=True)
class Unit:
    name: str
    summary: str
    config_cls: type
    component: str      # "module:Class" under hdl/, built from the config's fields
    bench: str          # cocotb test module under testbench/
    synth_options: str = ""   # extra options of Yosys's synth_<family> for this unit
    # Yosys name pattern of submodules (below the unit's own module) that synthesis keeps
    # apart instead of flattening: each is mapped alone; the unit's figures are the totals
    # over its hierarchy (several patterns: separated by spaces)
    keep_modules: str = ""

    def build(self, config: UnitConfig):
        module, cls = self.component.split(":")
        return getattr(importlib.import_module(module), cls)(**config.to_dict())

    def config(self, assignments=()):
        """The checked configuration from ``--set`` strings; errors become ``KllmError``."""
        try:
            return self.config_cls.from_strings(assignments)
        except (TypeError, ValueError) as e:
            raise KllmError(str(e)) from None

    @property
    def toplevel(self):
        return f"kllm_{self.name}"


# Orizuru's lanes and queues are 2:1 multiplexers behind flip-flop enables; with wide LUTs
# Yosys folds their select logic into every data bit (three LUT4s a bit instead of one).
# Both Orizuru and its baseline are synthesized with the same option.
NOWIDELUT = "-nowidelut"
# Both keep their compare-exchange modules (ce_modules=1) apart: the baseline's flat network
# at P=8, k=16 did not get through Yosys in 30 minutes.
CE_MODULES = "ce_*"
# Orizuru also keeps its register copies apart (hdl.component.kept_register, `merge=2`):
# Yosys would merge them back into one flip-flop each.
ORIZURU_KEPT = f"{CE_MODULES} keep_*"     # keep_*: hdl.component.KEPT_MODULES
# The IMU keeps its output stage's per-lane copies apart (hdl.component.kept_register and
# kept_logic: the skid flag and the output enables, each with its own logic).
IMU_KEPT = "keep_*"

UNITS = {u.name: u for u in [
    Unit("quantizer", "activation quantizer: fixed-point values -> nearest-centroid indices",
         QuantizerConfig, "hdl.quantizer:ActivationQuantizer", "testbench.test_quantizer"),
    Unit("orizuru", "streaming top-k: the k largest and k smallest values of each vector, "
         "with positions", OrizuruConfig, "hdl.orizuru:Orizuru", "testbench.test_orizuru",
         synth_options=NOWIDELUT, keep_modules=ORIZURU_KEPT),
    Unit("orizuru_baseline", "Orizuru's baseline: a full bitonic sorting network per cycle, "
         "pruned to k", OrizuruBaselineConfig, "hdl.orizuru:OrizuruBaseline",
         "testbench.test_orizuru", synth_options=NOWIDELUT, keep_modules=CE_MODULES),
    Unit("lut", "elementwise table: index -> index or fixed point (GELU, SiLU, exp), "
         "run-time loadable", LutConfig, "hdl.lut:ElementwiseLut", "testbench.test_lut"),
    Unit("product", "binary product table: (index, index) -> entry of a 2^ba x 2^ba table "
         "(SwiGLU gate * up)", ProductConfig, "hdl.product:ProductTable", "testbench.test_product"),
    Unit("softmax", "softmax of rows of indices by histogram: exp table, normalized reciprocal, "
         "per-row remap", SoftmaxConfig, "hdl.softmax:HistogramSoftmax", "testbench.test_softmax"),
    Unit("norm", "LayerNorm / RMSNorm of rows of indices by histogram: rsqrt table, per-row "
         "remap", NormConfig, "hdl.norm:HistogramNorm", "testbench.test_norm"),
    Unit("softmax_baseline", "softmax's baseline: conventional fixed point, an exp table and a "
         "multiplier per lane", SoftmaxBaselineConfig, "hdl.softmax:SoftmaxBaseline",
         "testbench.test_softmax"),
    Unit("norm_baseline", "norm's baseline: conventional fixed point, squares and a "
         "normalization multiply per lane", NormBaselineConfig, "hdl.norm:NormBaseline",
         "testbench.test_norm"),

    Unit("imu", "Index MatMul unit: L output channels x P elements per cycle, bucket sums of "
         "activation centroids by weight index, 2**bw multiplies per output",
         ImuConfig, "hdl.imu:Imu", "testbench.test_imu", keep_modules=IMU_KEPT),
    Unit("imu_baseline", "IMU's baseline: dequantize both operands and multiply-accumulate, "
         "one multiplier per MAC", ImuBaselineConfig, "hdl.imu:ImuBaseline",
         "testbench.test_imu", keep_modules=IMU_KEPT),
]}


def get_unit(name) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise KllmError(f"unknown unit '{name}' (units: {', '.join(UNITS)})") from None
