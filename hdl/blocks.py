"""Hardware building blocks that every unit uses: registers and delays, a stream
pipeline's enable, pipelined memories, multipliers, selections, adder trees and right
shifts, a leading-one encoder, and kept register copies.

Each builder is a function called inside a unit's ``elaborate`` with the unit's
``Module``; it names its signals after ``name`` and returns the result (and, for the
pipelined ones, the latency it built, asserted against the formula in
:mod:`base.latency`, where the configurations read it).
"""

from amaranth import (Array, Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed,
                      unsigned)
from amaranth.lib import memory

from base.latency import BANK, banked_latency, mul_latency, select_latency, tree_latency

__all__ = ["register", "delay", "banked_memory", "pipelined_mul", "leading_one",
           "leading_one_staged", "select_pipe", "adder_tree", "shift_right_staged",
           "pipeline_advance",
           "KEPT_MODULES", "KeptRegister",
           "kept_register", "kept_logic"]


def register(m, value, name, *, en=None, shape=None, init=0, reset_less=True):
    """``value`` registered (when ``en``, or always) into a new signal ``name`` of
    ``shape`` (``value``'s own by default).  A pipeline register: no reset unless
    ``reset_less=False`` (then the domain's reset sets it to ``init``)."""
    value = Value.cast(value)
    r = Signal(value.shape() if shape is None else shape, name=name, init=init,
               reset_less=reset_less)
    _sync(m, en, r.eq(value))
    return r


def pipeline_advance(m, i, o):
    """The enable of a stream pipeline that stalls as a whole: ``advance = ~o.valid |
    o.ready`` (the output register is empty or its beat is taken), and ``i.ready =
    advance``.  Returns ``advance``."""
    advance = Signal()
    m.d.comb += [
        advance.eq(~o.valid | o.ready),
        i.ready.eq(advance),
    ]
    return advance


# -- pipelined blocks
#
# ECP5 at 200 MHz (5 ns at speed grade 6) allows neither a block RAM read without its
# output register (5.8 ns clock-to-out; Yosys does not infer the register) nor an inferred
# MULT18X18D (Yosys maps multipliers without their internal registers: 3.9 ns inside the
# block plus 2.5-3 ns of routing in and out).  The row units therefore keep their tables
# in LUTRAM banks and multiply in the fabric, one adder level per pipeline stage.

def delay(m, value, cycles, name, en=None):
    """``value`` delayed by ``cycles`` registers (advancing when ``en``, or always)."""
    for k in range(cycles):
        r = Signal.like(value, name=f"{name}_d{k + 1}")
        _sync(m, en, r.eq(value))
        value = r
    return value


def _sync(m, en, *stmts):
    if en is None:
        m.d.sync += list(stmts)
    else:
        with m.If(en):
            m.d.sync += list(stmts)


def banked_memory(m, name, shape, depth, raddr, *, we=None, waddr=None, wdata=None,
                  init=None, en=None, copies=False, wreg=False):
    """A memory read with a fixed latency at full clock rate: LUTRAM banks of 16 words
    (a ROM when ``init`` is given and there is no write port), all read into registers,
    then a registered 4:1 selection by two upper address bits per stage.

    Returns ``(data, latency)``, ``latency = banked_latency(depth)``: the data of the
    address presented in cycle ``c`` (with ``en``) is on ``data`` in cycle ``c + latency``.
    The write port (``we``, ``waddr``, ``wdata``) writes in the cycle it is presented;
    with ``wreg`` a cycle later, through registers: one write enable per bank (decoded from
    ``waddr`` before the register, so no decode sits in front of a bank's write enable),
    the in-bank address and the data.

    ``copies``: first register one copy of the address per group of four banks (each
    copy zero unless its group is addressed, so synthesis keeps them apart), so no address
    bit drives more than four banks; one cycle more (``banked_latency(depth) + 1``).
    """
    ab = max(1, (depth - 1).bit_length())
    lo = min(ab, BANK.bit_length() - 1)
    nbanks = -(-depth // BANK)
    group_addr = None
    if copies:
        group_addr = []
        for g in range(-(-nbanks // 4)):
            a = Signal(lo, name=f"{name}_a{g}")
            sel = 1 if nbanks <= 4 else (raddr[lo + 2:ab] == g)
            _sync(m, en, a.eq(Mux(sel, raddr[:lo], 0)))
            group_addr.append(a)
        ra = Signal(len(raddr), name=f"{name}_raddr")
        _sync(m, en, ra.eq(raddr))
        raddr = ra
    if we is not None:
        wa, wd = waddr[:lo], wdata
        if wreg:
            wa, wd = Signal(lo, name=f"{name}_waddr"), Signal.like(wdata, name=f"{name}_wdata")
            m.d.sync += [wa.eq(waddr[:lo]), wd.eq(wdata)]
    words = []
    for k in range(nbanks):
        kinit = None if init is None else list(init[k * BANK:(k + 1) * BANK])
        mem = memory.Memory(shape=shape, depth=min(depth, BANK), init=kinit or [],
                            attrs={"ram_style": "distributed"} if init is None else
                            {"ram_style": "logic"})
        m.submodules[f"{name}_bank{k}"] = mem
        if we is not None:
            wr = mem.write_port()
            wen = we & (1 if nbanks == 1 else waddr[lo:ab] == k)
            if wreg:
                r = Signal(name=f"{name}_we{k}")
                m.d.sync += r.eq(wen)
                wen = r
            m.d.comb += [wr.en.eq(wen), wr.addr.eq(wa), wr.data.eq(wd)]
        rd = mem.read_port(domain="sync")
        m.d.comb += [rd.addr.eq(raddr[:lo] if group_addr is None else group_addr[k // 4]),
                     rd.en.eq(1 if en is None else en)]
        words.append(rd.data)
    hi = raddr[lo:ab]
    stage = 1
    while len(words) > 1:
        h = Signal(len(hi), name=f"{name}_sel{stage}")
        _sync(m, en, h.eq(hi))
        hi = h
        nxt = []
        for g in range(0, len(words), 4):
            w = Signal(shape, name=f"{name}_s{stage}_{g // 4}")
            group = words[g:g + 4]
            _sync(m, en, w.eq(Array(group)[hi[:2]] if len(group) > 1 else group[0]))
            nxt.append(w)
        words, hi = nxt, hi[2:]
        stage += 1
    assert stage == banked_latency(depth)
    return words[0], stage + bool(copies)


def pipelined_mul(m, a, b, name, en=None):
    """``a * b`` in the fabric, one partial-product adder level per register stage.

    Partial product ``i`` is ``a`` (sign-extended) shifted by ``i`` when bit ``i``
    of ``b`` is set; a signed ``b``'s top partial product is subtracted.  The
    first stage registers the partial products (the AND gates), the second adds
    pairs of them, each further stage pairs of sums.  Returns ``(product,
    latency)``, ``latency = mul_latency(len(b))``; the product is exact (width
    ``len(a) + len(b)``, signed if either operand is).
    """
    sa, sb = a.shape().signed, b.shape().signed
    W = len(a) + len(b)
    shape = signed(W) if (sa or sb) else unsigned(W)
    nb = len(b)
    terms = []           # (value, subtract): registered partial products (stage 0)
    for i in range(nb):
        pp = Signal(signed(len(a)) if sa else unsigned(len(a)), name=f"{name}_pp{i}")
        _sync(m, en, pp.eq(Mux(b[i], a, 0)))
        terms.append((pp << i, sb and i == nb - 1))
    level = []
    for k in range(0, nb, 2):
        s = Signal(shape, name=f"{name}_l1_{k // 2}")
        (x, nx) = terms[k]
        if k + 1 < nb:
            (y, ny) = terms[k + 1]
            v = (x - y) if ny else (x + y)
        else:
            v = -x if nx else x
        _sync(m, en, s.eq(v))
        level.append(s)
    stage = 2
    while len(level) > 1:
        stage += 1
        nxt = []
        for k in range(0, len(level), 2):
            s = Signal(shape, name=f"{name}_l{stage}_{k // 2}")
            _sync(m, en, s.eq(level[k] + level[k + 1] if k + 1 < len(level) else level[k]))
            nxt.append(s)
        level = nxt
    assert stage == mul_latency(nb)
    return level[0], stage


def leading_one(m, value, name):
    """Position of the highest set bit of ``value`` (0 when ``value`` is 0), combinational,
    as a balanced tree (``log2`` levels of 2:1 selection)."""
    def tree(lo, n):
        """(nonzero, position) of value[lo:lo + n]."""
        if n == 1:
            return value[lo], Const(0, 1)
        half = 1 << ((n - 1).bit_length() - 1)
        nz_l, pos_l = tree(lo, half)
        nz_h, pos_h = tree(lo + half, n - half)
        return nz_l | nz_h, Mux(nz_h, pos_h + half, pos_l)
    pos = Signal(range(max(2, len(value))), name=name)
    m.d.comb += pos.eq(tree(0, len(value))[1])
    return pos


def leading_one_staged(m, value, name, chunk=16):
    """The leading one of ``value`` in two stages: per ``chunk``-bit piece the piece's
    nonzero flag and leading one, registered (free running), then the top nonzero piece's
    position, combinational.  Returns ``(position, nonzero)``: both one cycle behind
    ``value`` (``position`` 0 when ``value`` is 0)."""
    pieces = [value[c:c + chunk] for c in range(0, len(value), chunk)]
    nz = [Signal(name=f"{name}_nz{q}") for q in range(len(pieces))]
    pos = [Signal(range(max(2, chunk)), name=f"{name}_pos{q}") for q in range(len(pieces))]
    for q, piece in enumerate(pieces):
        m.d.sync += [nz[q].eq(piece != 0), pos[q].eq(leading_one(m, piece, f"{name}_lead{q}"))]
    lead = Const(0, range(max(2, len(value))))
    for q in range(len(pieces)):
        lead = Mux(nz[q], pos[q] + chunk * q, lead)
    return lead, Cat(nz).any()


def select_pipe(m, words, index, name, en=None):
    """``words[index]`` through registered 4:1 selections (two index bits per stage).

    Returns ``(word, latency)``, ``latency = select_latency(len(words))``."""
    stage = 0
    words = list(words)
    n = len(words)
    while stage == 0 or len(words) > 1:
        stage += 1
        nxt = []
        for g in range(0, len(words), 4):
            w = Signal.like(words[0], name=f"{name}_s{stage}_{g // 4}")
            group = words[g:g + 4]
            _sync(m, en, w.eq(Array(group)[index[:2]] if len(group) > 1 else group[0]))
            nxt.append(w)
        if len(words) > 1:
            idx = Signal(max(1, len(index) - 2), name=f"{name}_idx{stage}")
            _sync(m, en, idx.eq(index[2:] if len(index) > 2 else 0))
            index = idx
        words = nxt
    assert stage == select_latency(n)
    return words[0], stage


def adder_tree(m, terms, name, en=None, width=None):
    """The sum of ``terms``, one register per level of pairwise adds.  Exact (each level
    one bit wider), or with ``width`` modulo ``2**width`` (every sum kept as a signed
    ``width``-bit value, no reset).  Returns ``(sum, latency)``,
    ``latency = tree_latency(len(terms))``."""
    level = list(terms)
    stage = 0
    while len(level) > 1:
        stage += 1
        nxt = []
        for k in range(0, len(level), 2):
            if k + 1 < len(level):
                v = level[k] + level[k + 1]
            else:
                v = level[k]
            if width is not None:
                v = v[:width].as_signed() if k + 1 < len(level) else v
                s = Signal(signed(width), name=f"{name}_l{stage}_{k // 2}", reset_less=True)
            else:
                s = Signal(v.shape(), name=f"{name}_l{stage}_{k // 2}")
            _sync(m, en, s.eq(v))
            nxt.append(s)
        level = nxt
    assert stage == tree_latency(len(terms))
    return level[0], stage


def shift_right_staged(m, value, amount, *, names=("sh_hi", "sh_mid"), en=None):
    """``value >> amount`` in three stages of 4:1 selection: by multiples of 16
    (``amount[4:]``), then by multiples of 4 (``amount[2:4]``), each registered (when
    ``en``, or always) into a signal of ``value``'s shape named ``names[0]`` and
    ``names[1]``, then by 0..3 (``amount[:2]``).  Returns the last stage, combinational,
    for the caller to register: ``amount`` must be still from two cycles before."""
    hi = Signal.like(value, name=names[0])
    mid = Signal.like(value, name=names[1])
    _sync(m, en, hi.eq(value >> Cat(Const(0, 4), amount[4:])),
          mid.eq(hi >> Cat(Const(0, 2), amount[2:4])))
    return mid >> amount[:2]


# -- kept register copies ---------------------------------------------------------------
# Copies of one register (same input, same enable) split a fan-out: each copy drives a
# part of the loads, so each net is shorter.  Yosys's `opt_merge` folds equal flip-flops
# back into one, so each copy is a module of its own (``keep_<name>``), and the synthesis
# flow keeps the modules matching ``KEPT_MODULES`` apart (a unit lists the pattern in
# ``hdl.units.Unit.keep_modules``; Yosys `keep_hierarchy`).  Simulation and formal
# checks see plain registers: the copies are equal by construction.

#: Yosys name pattern (below the unit's module) of the submodules :func:`kept_register` makes.
KEPT_MODULES = "keep_*"


class KeptRegister(Elaboratable):
    """A register ``q <= d`` (when ``en``, if built with ``enable=True``) as its own module.

    Built by :func:`kept_register`; kept apart from its copies by the synthesis flow
    (``KEPT_MODULES``).  ``reset_less=False`` gives ``q`` the domain's reset to ``init``.
    """

    def __init__(self, shape, *, enable=False, init=0, reset_less=True):
        self.d = Signal(shape)
        self.q = Signal(shape, init=init, reset_less=reset_less)
        self.en = Signal() if enable else None

    def elaborate(self, platform):
        m = Module()
        _sync(m, self.en, self.q.eq(self.d))
        return m


class _KeptLogicRegister(Elaboratable):
    """A register ``q <= value`` whose logic is built inside the module (see :func:`kept_register`)."""

    def __init__(self, value, *, enable=None, init=0, reset_less=True):
        self.value = value
        self.enable = enable
        self.q = Signal(value.shape(), init=init, reset_less=reset_less)

    def elaborate(self, platform):
        m = Module()
        _sync(m, self.enable, self.q.eq(self.value))
        return m


def kept_register(m, value, name, *, enable=None, init=0, reset_less=True, inside=False):
    """One copy of the register ``value`` (enabled by ``enable``, if given) that synthesis
    does not merge with its other copies: a :class:`KeptRegister` submodule ``keep_<name>``
    of ``m`` (the unit's top-level module, so that ``KEPT_MODULES`` names it).

    Returns the register's output.  Each call makes one more copy; pass the same
    ``value`` and ``enable`` to every copy of one register.

    ``inside=True``: the logic of ``value`` (and of ``enable``) is built inside the copy,
    the signals it reads become the module's inputs, so each copy has that logic of its
    own and the signals it reads, not its output, fan out to the copies.  Synthesis maps
    each copy alone, as if its inputs came early: meant for logic of registers (a signal
    computed outside stays one shared input), or for a multiplexer that synthesis can
    fold into the flip-flop itself (``Mux(s, constant, x)`` with an enable becomes a
    flip-flop with a synchronous set/reset and a clock enable, no LUT in front of ``d``,
    when the copy has no reset and ``init`` is that constant: an ECP5 flip-flop starts at
    its set/reset value).
    """
    value = Value.cast(value)
    if inside:
        reg = _KeptLogicRegister(value, enable=enable, init=init, reset_less=reset_less)
        m.submodules[f"keep_{name}"] = reg
        return reg.q
    reg = KeptRegister(value.shape(), enable=enable is not None, init=init,
                       reset_less=reset_less)
    m.submodules[f"keep_{name}"] = reg
    m.d.comb += reg.d.eq(value)
    if enable is not None:
        m.d.comb += reg.en.eq(enable)
    return reg.q


class _KeptLogic(Elaboratable):
    """``q = value`` (combinational), built inside a module of its own (see :func:`kept_logic`)."""

    def __init__(self, value):
        self.value = value
        self.q = Signal(value.shape())

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.q.eq(self.value)
        return m


def kept_logic(m, value, name):
    """One copy of the logic ``value`` that synthesis does not merge with its other copies
    (``opt_merge`` folds equal LUTs as it does equal flip-flops): a submodule
    ``keep_<name>`` of ``m``, kept apart like :func:`kept_register`'s copies.

    Meant for a signal that cannot be a register (it reads an input of the unit in the
    same cycle) and drives many flip-flop enables: each copy drives a part of them, and
    the signals it reads fan out to the copies instead.
    """
    logic = _KeptLogic(Value.cast(value))
    m.submodules[f"keep_{name}"] = logic
    return logic.q
