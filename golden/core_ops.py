"""Semantics and cycle counts of the KLLM core's compute instructions (MATMUL, ROWOP, ADD).

The interpreter (:mod:`golden.interp`) calls :func:`execute` for every compute
instruction with the on-chip buffers as byte arrays; it returns the cycles the compute
engine is busy with the instruction (from its start to its signal), and raises
:class:`base.isa.CoreFault` for a fault the core reports.
"""

from base.isa import CoreFault, Error, Op

__all__ = ["execute"]


def execute(config, instr, abuf, wbuf, tbuf):
    """Run one compute instruction on ``abuf``/``wbuf``/``tbuf`` (bytearrays); return its
    cycles."""
    raise CoreFault(Error.BAD_OPCODE, f"compute opcode {instr.op:#x} not implemented yet")
