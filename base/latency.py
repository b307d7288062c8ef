"""Latency and width arithmetic of the shared hardware blocks (:mod:`hdl.blocks`).

Each builder in :mod:`hdl.blocks` asserts the latency it built against the formula
here, so the configurations (:mod:`base.config`), the golden cycle models and the
benches take every latency from one place without importing the hardware.
"""

from base.formats import RSQRT_ADDR

__all__ = ["BANK", "clog2", "bits_signed", "bitonic_sort_depth", "banked_latency",
           "bank_levels", "table_latency", "mul_latency", "select_latency", "tree_latency", "DIV3_BITS",
           "rsqrt_latency", "row_rsqrt_latency"]

#: Words of one LUTRAM bank (a DPR16X4 on the ECP5).
BANK = 16


def clog2(n):
    """Bits of a counter that holds 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def bits_signed(max_abs):
    """Bits of a signed integer that holds every value in [-max_abs, max_abs]."""
    return int(max_abs).bit_length() + 1


def bitonic_sort_depth(n):
    """Compare-exchange levels of a bitonic sorter of ``n`` inputs (padded to a power of 2)."""
    s = (n - 1).bit_length()
    return s * (s + 1) // 2


def bank_levels(addr_bits):
    """Registered 4:1 selection levels behind 16-word banks for ``addr_bits`` address bits:
    one per two address bits above a bank's four."""
    return (max(0, addr_bits - (BANK.bit_length() - 1)) + 1) // 2


def banked_latency(depth):
    """Cycles from a read address to its data in :func:`hdl.blocks.banked_memory`."""
    return 1 + bank_levels((depth - 1).bit_length())


def table_latency(depth):
    """Cycles from an accepted beat to its output beat in :func:`hdl.lut.table_pipeline`
    over a ``depth``-word table: the input register and the output register (the read
    register of a 16-word bank), plus one per two address bits above a bank's four."""
    return 2 + bank_levels((depth - 1).bit_length())


def mul_latency(b_width):
    """Cycles of :func:`hdl.blocks.pipelined_mul` for a multiplier operand of ``b_width`` bits."""
    return 1 + max(1, (b_width - 1).bit_length())


def select_latency(n):
    """Cycles of :func:`hdl.blocks.select_pipe` over ``n`` words."""
    return max(1, ((n - 1).bit_length() + 1) // 2)


def tree_latency(n):
    """Register levels of :func:`hdl.blocks.adder_tree` over ``n`` terms (0 for one term)."""
    return (n - 1).bit_length()


#: Bits of the constant 683 = 0b1010101011: floor(x / 3) = (x * 683) >> 11 for 0 <= x < 768.
DIV3_BITS = 10


def rsqrt_latency():
    """Cycles of :func:`hdl.norm.rsqrt_lookup`: divide by 3, clamp, the rsqrt ROM (with
    its address copies)."""
    return mul_latency(DIV3_BITS) + 1 + banked_latency(1 << RSQRT_ADDR) + 1


def row_rsqrt_latency(Lv):
    """Cycles of :func:`hdl.norm.row_rsqrt` from stable sums to stable outputs (``Lv`` the
    deeper of the two variance multipliers)."""
    return Lv + 7 + rsqrt_latency()
