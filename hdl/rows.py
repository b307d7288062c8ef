"""Building blocks shared by the row units (histogram softmax and norm, and their
baselines): the row-buffer input stage, and pipelined memories, multipliers and a
leading-one encoder for a 200 MHz clock.

Not a unit of its own: everything here is built inside a unit's ``elaborate``.
"""

from types import SimpleNamespace

from amaranth import Array, Cat, Const, Mux, Signal, signed, unsigned
from amaranth.lib import memory

__all__ = ["RowInput", "RowRead", "SkidOutput", "adder_tree", "banked_latency", "banked_memory", "delay",
           "last_beat_compares", "leading_one", "mul_latency", "pipelined_mul", "select_latency", "select_pipe", "tree_latency"]


class RowInput:
    """A row of beats into a row buffer, one beat per cycle, and the stage-0 registers.

    While a row comes in, every accepted beat (``i.valid & i.ready``) is
    written into the row buffer (``word``, the bits to keep of the beat, at
    address ``wptr``; ``depth`` words, block RAM for deep rows) and its
    payload is registered into ``s0`` (with ``s0_valid`` when it was stored,
    ``s0_end`` when it was the row's ``last`` beat), where the unit
    computes its per-beat statistics in the following cycle.  After the
    ``last`` beat the input stops (``i.ready = ~busy``) until the unit
    raises ``clear`` (one cycle, when the row's last output beat is taken),
    which also rewinds ``wptr`` to 0.  Beats beyond ``depth`` are dropped (the
    row is cut) and ``overflow`` is set until reset.

    Attributes
    ----------
    read : the row buffer's read port (the unit drives ``addr`` and ``en``; ``data``).
    read_latency : cycles from ``addr`` to ``data``: 1 for a block RAM; with ``banked``,
        LUTRAM banks (:func:`banked_memory`, no block RAM clock-to-out on the path).
    wptr : beats of the current row in the buffer, 0 .. ``depth``.
    busy : the row's last beat is in; input stopped.
    s0, s0_valid, s0_end : the registered beat, stored, and the last of its row.
    store : (comb) the beat presented this cycle is accepted and stored.
    clear : driven by the unit (comb): the row is done, take the next one.
    """

    def __init__(self, m, i, overflow, word, depth, name="row_buffer", banked=False):
        self.busy = Signal(name=f"{name}_busy")
        self.wptr = Signal(range(depth + 1), name=f"{name}_wptr")
        self.clear = Signal(name=f"{name}_clear")
        self.s0 = Signal(i.payload.shape(), name="s0")
        self.s0_valid = Signal(name="s0_valid")
        self.s0_end = Signal(name="s0_end")
        full = Signal(name=f"{name}_full")
        fire = Signal(name=f"{name}_fire")
        self.store = Signal(name=f"{name}_store")     # comb: this cycle's beat is stored

        # ``full`` (``wptr == depth``) is a registered look-ahead: set as the beat that makes
        # ``wptr`` reach ``depth`` is stored, so no compare sits in front of ``wptr``'s enable
        m.d.comb += [
            i.ready.eq(~self.busy),
            fire.eq(i.valid & ~self.busy),
            self.store.eq(fire & ~full),
        ]
        if banked:
            # LUTRAM banks: ``read.data`` is valid ``read_latency`` cycles after ``read.addr``
            # is presented with ``read.en`` (see :func:`banked_memory`)
            self.read = SimpleNamespace(addr=Signal(range(depth), name=f"{name}_raddr"),
                                        en=Signal(name=f"{name}_ren"))
            # the write is registered (it lands a cycle later; the row is read back after
            # the per-row computation), with one registered write enable per bank
            self.read.data, self.read_latency = banked_memory(
                m, name, unsigned(len(word)), depth, self.read.addr, we=self.store,
                waddr=self.wptr, wdata=word, en=self.read.en, wreg=True)
        else:
            buf = memory.Memory(shape=unsigned(len(word)), depth=depth, init=[])
            m.submodules[name] = buf
            wr = buf.write_port()
            self.read = buf.read_port(domain="sync")
            self.read_latency = 1
            m.d.comb += [wr.en.eq(fire & ~full), wr.addr.eq(self.wptr), wr.data.eq(word)]
        m.d.sync += [self.s0_valid.eq(fire & ~full), self.s0_end.eq(fire & i.payload.last),
                     self.s0.eq(i.payload)]
        with m.If(fire):
            with m.If(i.payload.last):
                m.d.sync += self.busy.eq(1)
            with m.If(full):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.sync += [self.wptr.eq(self.wptr + 1), full.eq(self.wptr == depth - 1)]
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(0), self.wptr.eq(0), full.eq(0)]


class RowRead:
    """Reads a :class:`RowInput`'s buffered row back from its first beat, one beat per
    cycle with ``advance``, while ``active``; rewinds while ``active`` is low (so a row
    can be read more than once: raise ``active`` again).

    ``issue`` (comb): a read of beat ``rptr`` is issued this cycle if ``advance``;
    ``at_first`` and ``at_last`` (registered look-aheads, no compare on the issue path):
    that beat is the row's first / last.  After the last beat ``issue`` stays low until
    the rewind.  Drives the buffer's read port (``addr``, ``en = advance``).

    ``at_last``'s next value is selected from registered compares, free running (``rptr``
    and the row's length are still for a cycle before any step): ``rptr == wlast - 1``
    for a step after a cycle without one, ``rptr == wlast - 2`` for a step after a step
    (``rptr`` one higher now), ``wlast == 0`` on the rewind; no compare in front of it.
    So the row's last beat must be in four cycles, and ``active`` low for two, before a
    pass starts (the baselines wait far longer: their per-row sums and normalization).
    """

    def __init__(self, m, rows, active, advance, name="row_read"):
        self.rptr = Signal.like(rows.wptr, name=f"{name}_rptr")
        self.issue = Signal(name=f"{name}_issue")
        self.at_first = Signal(init=1, name=f"{name}_at_first")
        self.at_last = Signal(name=f"{name}_at_last")
        rend = Signal(name=f"{name}_end")            # the last beat was issued
        # the row's last beat and the one before (registered; still while the row is read)
        wlast = Signal.like(rows.wptr, name=f"{name}_wlast")
        wlast1 = Signal.like(rows.wptr, name=f"{name}_wlast1")
        step = Signal(name=f"{name}_step")
        m.d.sync += [wlast.eq(rows.wptr - 1), wlast1.eq(wlast - 1)]
        next_last, last_only = last_beat_compares(m, self.rptr, wlast, wlast1, step, f"{name}_")
        m.d.comb += [self.issue.eq(active & ~rend), rows.read.en.eq(advance),
                     rows.read.addr.eq(self.rptr), step.eq(active & advance & self.issue)]
        with m.If(~active):
            m.d.sync += [self.at_first.eq(1), self.at_last.eq(last_only), self.rptr.eq(0),
                         rend.eq(0)]
        with m.Elif(step):
            m.d.sync += [self.at_first.eq(0), self.at_last.eq(next_last),
                         self.rptr.eq(self.rptr + 1)]
            with m.If(self.at_last):
                m.d.sync += rend.eq(1)


def last_beat_compares(m, rptr, wlast, wlast1, step, prefix=""):
    """The next value of a row read's last-beat flag from registered compares, free
    running (``rptr`` and the row's ``wlast = length - 1``, ``wlast1 = wlast - 1`` still
    for a cycle before any ``step``): ``rptr == wlast1`` for a step after a cycle without
    one, ``rptr == wlast1 - 1`` for a step after a step (``rptr`` one higher now), so no
    compare sits in front of the flag.  Returns ``(next_last, last_only)``: the flag's
    value for a step, and ``wlast == 0`` (a one-beat row; the flag's value at the row's
    start), both registered."""
    wlast2 = Signal.like(wlast1, name=f"{prefix}wlast2")
    eq_held = Signal(name=f"{prefix}eq_held")
    eq_stepped = Signal(name=f"{prefix}eq_stepped")
    last_only = Signal(name=f"{prefix}last_only")
    stepped = Signal(name=f"{prefix}stepped")
    m.d.sync += [wlast2.eq(wlast1 - 1), eq_held.eq(rptr == wlast1),
                 eq_stepped.eq(rptr == wlast2), last_only.eq(wlast == 0), stepped.eq(step)]
    return Mux(stepped, eq_stepped, eq_held), last_only


class SkidOutput:
    """The output register of a row unit's read pipeline, with a skid register, so the
    stream's ``o.ready`` reaches only these registers and never the pipeline behind them.

    The unit drives ``valid`` and ``payload`` (combinational, the beat its pipeline
    presents) and advances its pipeline with ``advance``, a register (no skid beat
    held): while the output register holds a beat that is not taken, the presented
    beat goes into the skid register and the pipeline stops in the next cycle, until
    the output takes the skid beat.  No cycle is added: with ``o.ready`` high the
    presented beat is on ``o`` in the next cycle, as with a plain output register.

    ``last_out``: a register, high for one cycle after a beat with ``payload.last``
    left the pipeline (the cycle it is first on ``o`` when ``o.ready`` was high, so the
    unit may free the row: its beats are all in the output registers).
    """

    def __init__(self, m, o, name="out"):
        layout = o.payload.shape()
        self.valid = Signal(name=f"{name}_valid")
        self.payload = Signal(layout, name=f"{name}_payload")
        self.advance = Signal(name=f"{name}_advance")
        self.last_out = Signal(name=f"{name}_last_out")
        held = Signal(name=f"{name}_skid_valid")
        skid = Signal(layout, name=f"{name}_skid")
        m.d.comb += self.advance.eq(~held)
        m.d.sync += self.last_out.eq(~held & self.valid & self.payload.last)
        with m.If(held):
            with m.If(o.ready):          # o.valid is high while a beat is held
                m.d.sync += [o.payload.eq(skid), held.eq(0)]
        with m.Elif(o.valid & ~o.ready):
            m.d.sync += [skid.eq(self.payload), held.eq(self.valid)]
        with m.Else():
            m.d.sync += [o.payload.eq(self.payload), o.valid.eq(self.valid)]


# ------------------------------------------------------------------ pipelined building blocks
#
# ECP5 at 200 MHz (5 ns at speed grade 6) allows neither a block RAM read without its
# output register (5.8 ns clock-to-out; Yosys does not infer the register) nor an inferred
# MULT18X18D (Yosys maps multipliers without their internal registers: 3.9 ns inside the
# block plus 2.5-3 ns of routing in and out).  The row units therefore keep their tables
# in LUTRAM banks and multiply in the fabric, one adder level per pipeline stage.

BANK = 16   # words of one LUTRAM bank (DPR16X4 on ECP5)


def delay(m, value, cycles, name, en=None):
    """``value`` delayed by ``cycles`` registers (advancing when ``en``, or always)."""
    for k in range(cycles):
        r = Signal.like(value, name=f"{name}_d{k + 1}")
        if en is None:
            m.d.sync += r.eq(value)
        else:
            with m.If(en):
                m.d.sync += r.eq(value)
        value = r
    return value


def _sync(m, en, *stmts):
    if en is None:
        m.d.sync += list(stmts)
    else:
        with m.If(en):
            m.d.sync += list(stmts)


def banked_latency(depth):
    """Cycles from a read address to its data in :func:`banked_memory`."""
    extra = max(0, (depth - 1).bit_length() - (BANK.bit_length() - 1))
    return 1 + (extra + 1) // 2


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


def mul_latency(b_width):
    """Cycles of :func:`pipelined_mul` for a multiplier operand of ``b_width`` bits."""
    return 1 + max(1, (b_width - 1).bit_length())


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


def select_latency(n):
    """Cycles of :func:`select_pipe` over ``n`` words."""
    return max(1, ((n - 1).bit_length() + 1) // 2)


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


def tree_latency(n):
    """Register levels of :func:`adder_tree` over ``n`` terms (0 for one term)."""
    return (n - 1).bit_length()


def adder_tree(m, terms, name, en=None):
    """The sum of ``terms``, one register per level of pairwise adds (exact: each level
    one bit wider).  Returns ``(sum, latency)``, ``latency = tree_latency(len(terms))``."""
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
            s = Signal(v.shape(), name=f"{name}_l{stage}_{k // 2}")
            _sync(m, en, s.eq(v))
            nxt.append(s)
        level = nxt
    assert stage == tree_latency(len(terms))
    return level[0], stage
