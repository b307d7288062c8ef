"""The KLLM core's interpreter: what a program does to external memory (the oracle) and how
many cycles the core takes for it (the cycle model of ``hdl/core.py``).

:class:`Interpreter` runs a program from an external-memory image; :meth:`Interpreter.run`
returns a :class:`Result`: the final memory, the error code, the cycles from start to done,
the busy and stall cycles of each engine, and a trace of every instruction's start and end
cycle.

**Semantics** (base/isa.py).  The data effect of LOAD and STORE is computed whole, in
plain Python (:func:`load`, :func:`store`), at the cycle the instruction ends; a compute
instruction's effect is :func:`golden.core_ops.execute`'s, at its start.

* LOAD LINEAR: row r's ``row_bytes`` bytes from ``dram_addr + r * dram_stride`` to
  ``sram_addr + r * sram_stride`` of ABUF, WBUF or TBUF (``sub`` bits 1:0).
* LOAD LANES (WBUF only): row r is lane r's indices: byte j of row r goes to
  ``sram_addr + index + ((j // E) * L + r) * E + j % E`` (E = the slot's ``entry_bytes``,
  L = ``outputs``); ``sram_addr`` is a slot's base, ``sram_stride`` is not used.
* STORE INT16: the row's ``row_bytes`` bytes of ABUF as they are.  STORE PACK: DRAM bit b of
  the row is bit ``b % bw`` of the row's element ``b // bw`` (16-bit elements from
  ``sram_addr``, ``bw`` = the configuration's weight index bits): ``ceil(8 row_bytes / bw)``
  elements per row.
* DRAM addresses wrap at 2**32.  A transfer of no bytes (``rows`` or ``row_bytes`` 0) does
  nothing and never faults on its addresses.

**Faults** (checked when the instruction starts, :func:`check`): a ``sub`` out of range
(LOAD: space 3, mode > 1, LANES outside WBUF, bits 7:4 set; STORE: sub > 1), or an unknown
opcode at dispatch: BAD_OPCODE.  LANES: more rows than lanes or a row longer than the index
section's lane: OVERFLOW.  An extent past its buffer, a LANES address that is not a slot's
base, a PACK ``sram_addr`` or ``sram_stride`` that is odd: BAD_ADDRESS.  A token given to a
semaphore at SEM_MAX: SEMAPHORE.  No engine able to do anything more while instructions wait:
DEADLOCK.  After a fault no instruction starts and no instruction is fetched; those running
finish; the core is done when all are idle.

**Timing** (cycle 0 is the first cycle after the START write; ``cycles`` counts cycle 0 to
the done cycle, both included).  A memory that answers a read burst's first beat ``LR``
cycles after its AR handshake and a write burst's response ``LB`` cycles after its last W
handshake, one beat a cycle otherwise, with every ready high (cocotbext-axi's ``AxiRam``
with no pauses: LR = LB = 2):

* Read channel (AR/R), one burst in flight, shared by the fetch unit and LOAD; a request
  seen in cycle t while the channel is free is granted in t (the fetch unit first), AR is
  valid from t + 1, the channel is free again in the cycle after the last beat.
* Fetch: requests the next instruction (one burst of 32 / ``bus_bytes`` beats) when it holds
  none; the cycle after the last beat it dispatches it to its queue (an END: fetching
  stops), unless the queue is full (a fetch stall).  Queues of :data:`QUEUE_DEPTH`; an
  instruction dispatched in cycle d can start in d + 1.
* An engine starts the instruction at its queue's head in cycle t when it is idle, no fault
  is registered and every semaphore of ``wait`` is above the tokens that engines before it
  (load, compute, store) take in t; it takes them in t.  It gives its ``signal`` tokens in
  its last cycle e (seen by starts from e + 1, when the engine can start again).
* LOAD / STORE: start t, t + 1 (operands), t + 2 (checks: a fault is registered here; a
  transfer of no bytes goes on to its last cycle t + 3).  Each row is cut into bursts of
  the ``bus_bytes``-aligned beats that cover it, none crossing a multiple of
  :func:`base.isa.burst_boundary`.
* LOAD: a burst is requested in the cycle after the checks or after the previous burst's
  last beat.  A row whose on-chip address is congruent to its DRAM address modulo
  ``bus_bytes`` (LINEAR) writes each beat in the cycle it arrives (byte enables); any other
  row (and every LANES row) goes through a one-byte-a-cycle writer: a beat is taken when
  the writer has at most one byte left, its bytes are written in the following cycles.
  The last cycle is the first cycle after the last burst with the writer empty.
* STORE: per burst AW (one cycle), then the W beats from the next cycle, then the write
  response; the next burst's AW is the cycle after it, the last cycle the cycle after the
  last response.  A congruent INT16 row reads one buffer word a cycle, its beats one a
  cycle from the cycle after the first read; any other row goes through a packer: one item
  (a byte, or a PACK element) read a cycle, appended a cycle later, a beat sent in the cycle
  after its last byte, the packer holding while it is sent.
* Compute: :func:`golden.core_ops.execute` returns the cycles n: MATMUL: start t, tokens
  given in t + n - 1; ROWOP and ADD (the row engine, started in t, its done n cycles
  later): tokens given in t + n.  A fault it raises is registered in t + 1, except a
  ROWOP's found after the format's thresholds (:func:`row_fault_delay`).
* A fault registered in cycle f stops starts and fetch requests from f + 1; the done cycle
  is the first from f + 1 with every engine idle and no read burst in flight.  DEADLOCK is
  registered in the first cycle in which the fetch unit is blocked (ended, or its queue
  full), every engine is idle with nothing able to start, no read is in flight and an
  instruction is queued.
"""

from collections import deque
from dataclasses import dataclass, field

from base.isa import (ENGINE, INSTR_BYTES, PROG_ALIGN, QUEUE_DEPTH, SEM_MAX, SEMAPHORES,
                      CoreFault, Error, LoadMode, Op, RowKind, Space, StoreMode,
                      burst_boundary, decode)
from base.rowsched import RE_STREAM
from golden import core_ops

__all__ = ["Interpreter", "Result", "Dram", "load", "store", "check", "READ_LATENCY",
           "WRITE_LATENCY", "ENGINES"]

#: The memory the cycle count is exact for: first R beat this many cycles after AR, B this
#: many cycles after the last W (cocotbext-axi's AxiRam without pauses).
READ_LATENCY = 2
WRITE_LATENCY = 2
ENGINES = ("fetch", "load", "compute", "store")
_QUEUED = ("load", "compute", "store")
MASK32 = (1 << 32) - 1


class Dram:
    """External memory: sparse 4 KiB pages, unwritten bytes read as 0, addresses mod 2**32."""

    PAGE = 4096

    def __init__(self, image=None):
        self.pages = {}
        self.size = None
        if isinstance(image, (bytes, bytearray)):
            self.size = len(image)
            self.write(0, image)
        elif isinstance(image, dict):
            for addr, data in image.items():
                self.write(addr, data)
        elif image is not None:
            raise TypeError(f"dram must be a bytearray or a dict {{address: bytes}}, "
                            f"got {type(image).__name__}")

    def read(self, addr, n):
        out = bytearray(n)
        k = 0
        while k < n:
            a = (addr + k) & MASK32
            page, off = divmod(a, self.PAGE)
            m = min(n - k, self.PAGE - off)
            p = self.pages.get(page)
            if p is not None:
                out[k:k + m] = p[off:off + m]
            k += m
        return bytes(out)

    def write(self, addr, data):
        data = bytes(data)
        k = 0
        while k < len(data):
            a = (addr + k) & MASK32
            page, off = divmod(a, self.PAGE)
            m = min(len(data) - k, self.PAGE - off)
            p = self.pages.setdefault(page, bytearray(self.PAGE))
            p[off:off + m] = data[k:k + m]
            k += m

    def image(self, like):
        """The memory as the caller gave it: a bytearray (at least as long as given) or a
        dict ``{page address: bytes}`` of every page touched."""
        if isinstance(like, (bytes, bytearray)):
            top = max([self.size or 0] + [(p + 1) * self.PAGE for p in self.pages])
            end = max(self.size or 0,
                      max((p * self.PAGE + len(d.rstrip(b"\0")) for p, d in self.pages.items()),
                          default=0))
            return bytearray(self.read(0, min(top, max(end, self.size or 0))))
        return {p * self.PAGE: bytes(d) for p, d in sorted(self.pages.items())}


# ------------------------------------------------------------------ semantics

def _buffer_bytes(config, space):
    return {Space.ABUF: config.abuf_bytes, Space.WBUF: config.wbuf_bytes,
            Space.TBUF: config.tbuf_words * 4}[space]


def pack_elements(config, row_bytes):
    """Elements a PACK row of ``row_bytes`` DRAM bytes reads."""
    return -(-8 * row_bytes // config.bw)


def check(config, ins):
    """The fault an instruction raises when it starts (:class:`CoreFault`), else None."""
    rows, rb = ins.args.get("rows", 0), ins.args.get("row_bytes", 0)
    empty = rows == 0 or rb == 0
    if ins.op == Op.LOAD:
        space, mode = ins.sub & 3, (ins.sub >> 2) & 3
        if ins.sub >> 4 or space > Space.TBUF or mode > LoadMode.LANES or (
                mode == LoadMode.LANES and space != Space.WBUF):
            return CoreFault(Error.BAD_OPCODE, f"LOAD sub {ins.sub:#x} out of range")
        if empty:
            return None
        if mode == LoadMode.LANES:
            slot, eb = config.slot, config.slot.entry_bytes
            if rows > config.outputs:
                return CoreFault(Error.OVERFLOW, f"LANES load of {rows} rows, {config.outputs} "
                                                 f"lanes")
            if rb > config.depth * eb:
                return CoreFault(Error.OVERFLOW, f"LANES row of {rb} bytes, a lane holds "
                                                 f"{config.depth * eb}")
            if ins.sram_addr % slot.stride or ins.sram_addr >= config.wbuf_bytes:
                return CoreFault(Error.BAD_ADDRESS, f"LANES load to {ins.sram_addr:#x}, not a "
                                                    f"slot's base")
            return None
        end = ins.sram_addr + (rows - 1) * ins.sram_stride + rb
        if end > _buffer_bytes(config, space):
            return CoreFault(Error.BAD_ADDRESS, f"LOAD up to byte {end} of a "
                                                f"{_buffer_bytes(config, space)}-byte buffer")
        return None
    if ins.op == Op.STORE:
        if ins.sub > StoreMode.PACK:
            return CoreFault(Error.BAD_OPCODE, f"STORE sub {ins.sub:#x} out of range")
        if empty:
            return None
        if ins.sub == StoreMode.PACK and (ins.sram_addr | ins.sram_stride) & 1:
            return CoreFault(Error.BAD_ADDRESS, "PACK store from an odd address or stride")
        n = rb if ins.sub == StoreMode.INT16 else 2 * pack_elements(config, rb)
        end = ins.sram_addr + (rows - 1) * ins.sram_stride + n
        if end > config.abuf_bytes:
            return CoreFault(Error.BAD_ADDRESS, f"STORE from up to byte {end} of a "
                                                f"{config.abuf_bytes}-byte ABUF")
        return None
    return None


def load(config, ins, dram, bufs):
    """LOAD's effect: ``bufs`` = {Space: bytearray}."""
    rows, rb = ins.rows, ins.row_bytes
    space, mode = ins.sub & 3, (ins.sub >> 2) & 3
    buf = bufs[space]
    L, eb = config.outputs, config.slot.entry_bytes
    base = ins.sram_addr + config.slot.index
    for r in range(rows):
        data = dram.read(ins.dram_addr + r * ins.dram_stride, rb)
        if mode == LoadMode.LINEAR:
            s = ins.sram_addr + r * ins.sram_stride
            buf[s:s + rb] = data
        else:
            for j, v in enumerate(data):
                buf[base + ((j // eb) * L + r) * eb + j % eb] = v


def store(config, ins, dram, abuf):
    """STORE's effect on ``dram``."""
    rows, rb = ins.rows, ins.row_bytes
    for r in range(rows):
        s = ins.sram_addr + r * ins.sram_stride
        if ins.sub == StoreMode.INT16:
            data = bytes(abuf[s:s + rb])
        else:
            bw = config.bw
            n = pack_elements(config, rb)
            acc = 0
            for e in range(n):
                v = int.from_bytes(abuf[s + 2 * e:s + 2 * e + 2], "little")
                acc |= (v & ((1 << bw) - 1)) << (e * bw)
            data = (acc & ((1 << (8 * rb)) - 1)).to_bytes(rb, "little")
        dram.write(ins.dram_addr + r * ins.dram_stride, data)


# ------------------------------------------------------------------ transfers, beat by beat

def _row_beats(config, a, rb):
    """The bursts of one row from DRAM address ``a``: ``[[(lo, hi), ...], ...]``, each beat
    as the range of the row's bytes it carries (offsets in the beat)."""
    B = config.bus_bytes
    bound = burst_boundary(B)
    cur = a & ~(B - 1)
    end = a + rb
    bursts = []
    while cur < end:
        stop = min(-(-end // B) * B, (cur // bound + 1) * bound)
        beats = []
        for A in range(cur, stop, B):
            beats.append((max(a, A) - A, min(end, A + B) - A))
        bursts.append(beats)
        cur = stop
    return bursts


@dataclass
class _Burst:
    beats: list                 # per beat: bytes (slow rows) / the beat's cumulative bytes
    fast: bool
    row_start: bool = False     # store packer: the first burst of a row
    items: int = 0              # store packer: items of the row (on its first burst)
    ib: int = 8                 # store packer: bits per item


def _plan(config, ins):
    """The bursts of a LOAD or STORE, in order."""
    B = config.bus_bytes
    out = []
    for r in range(ins.rows):
        a = (ins.dram_addr + r * ins.dram_stride) & MASK32
        s = ins.sram_addr + r * ins.sram_stride
        rb = ins.row_bytes
        if ins.op == Op.LOAD:
            fast = (ins.sub >> 2) & 3 == LoadMode.LINEAR and (s - a) % B == 0
            for beats in _row_beats(config, a, rb):
                out.append(_Burst([hi - lo for lo, hi in beats], fast))
        else:
            fast = ins.sub == StoreMode.INT16 and (s - a) % B == 0
            done = 0
            for k, beats in enumerate(_row_beats(config, a, rb)):
                cum = []
                for lo, hi in beats:
                    done += hi - lo
                    cum.append(done)
                b = _Burst(cum, fast, row_start=k == 0)
                if k == 0:
                    b.ib = 8 if ins.sub == StoreMode.INT16 else config.bw
                    b.items = rb if ins.sub == StoreMode.INT16 else pack_elements(config, rb)
                b.rb = rb
                out.append(b)
    return out


# ------------------------------------------------------------------ the machine

@dataclass
class Result:
    dram: object                      # bytearray or {page address: bytes}, as given
    error: int = Error.NONE
    message: str = ""
    cycles: int = 0
    busy: dict = field(default_factory=dict)     # engine -> cycles
    stalls: dict = field(default_factory=dict)   # engine -> cycles
    instrs: int = 0                              # instructions fetched (END included)
    sems: list = field(default_factory=list)     # the semaphores' counts at the end
    trace: list = field(default_factory=list)    # (index, engine, start, end)
    abuf: bytearray = None
    wbuf: bytearray = None
    tbuf: bytearray = None

    @property
    def buffers(self):
        """The on-chip buffers at the end, as :meth:`Interpreter.run` takes them."""
        return {"abuf": self.abuf, "wbuf": self.wbuf, "tbuf": self.tbuf}


class _Engine:
    def __init__(self, name):
        self.name = name
        self.queue = deque()          # (index, Instr)
        self.state = "idle"
        self.ins = None
        self.index = None
        self.start = None
        self.bursts = []


class Interpreter:
    """The core's oracle and cycle model for one :class:`base.config.CoreConfig`.

    ``read_latency`` / ``write_latency``: the memory's LR and LB (module docstring)."""

    def __init__(self, config, read_latency=READ_LATENCY, write_latency=WRITE_LATENCY,
                 compute=True, read_beat_cycles=1):
        """``compute``: True (every compute instruction runs), False (none: each faults
        BAD_OPCODE when it starts), or the set of compute opcodes that run -- to hold an RTL
        whose compute engine implements only those (a bench of that stage) to the model."""
        self.config = config
        self.lr = read_latency
        self.lb = write_latency
        self.compute = compute
        #: a memory slower than the bus: one R beat every ``read_beat_cycles`` cycles (the
        #: bandwidth studies of ``kllm bench core``; the RTL benches use 1)
        if not isinstance(read_beat_cycles, int) or read_beat_cycles < 1:
            raise ValueError(f"read_beat_cycles must be an integer >= 1, got {read_beat_cycles!r}")
        self.rbc = read_beat_cycles

    def run(self, dram, prog_addr, max_cycles=1_000_000, buffers=None):
        """Run the program at ``prog_addr`` (a multiple of 32) on the memory image ``dram``
        (a bytearray from address 0, or ``{address: bytes}``); return a :class:`Result`.
        ``buffers``: the on-chip buffers at the start (``{"abuf": ..., "wbuf": ...,
        "tbuf": ...}``, e.g. a previous result's: the core keeps them from one program to
        the next); zeros by default.
        Raises ``RuntimeError`` after ``max_cycles`` without done (a model bug: the core
        itself always ends)."""
        cfg = self.config
        if prog_addr % PROG_ALIGN:
            raise ValueError(f"the program address must be a multiple of {PROG_ALIGN}, "
                             f"got {prog_addr:#x}")
        mem = Dram(dram)
        bufs = {Space.ABUF: bytearray(cfg.abuf_bytes), Space.WBUF: bytearray(cfg.wbuf_bytes),
                Space.TBUF: bytearray(cfg.tbuf_words * 4)}
        for name, space in (("abuf", Space.ABUF), ("wbuf", Space.WBUF), ("tbuf", Space.TBUF)):
            if buffers and buffers.get(name) is not None:
                if len(buffers[name]) != len(bufs[space]):
                    raise ValueError(f"{name} is {len(bufs[space])} bytes, got "
                                     f"{len(buffers[name])}")
                bufs[space][:] = buffers[name]
        res = Result(dram=None, busy={e: 0 for e in ENGINES}, stalls={e: 0 for e in ENGINES})
        nb_fetch = INSTR_BYTES // cfg.bus_bytes
        sems = [0] * SEMAPHORES
        eng = {n: _Engine(n) for n in _QUEUED}
        le, ce, se = eng["load"], eng["compute"], eng["store"]
        fault = Error.NONE
        pc, ended, ir, ir_valid, fetching, fetched = prog_addr & MASK32, False, None, False, \
            False, 0
        rd = None        # the read burst in flight: owner, ar, n, k, avail
        cnt = 0          # bytes left in the load writer

        t = 0
        while True:
            if t >= max_cycles:
                raise RuntimeError(f"no done after {max_cycles} cycles")
            faults = []                      # (code, message) raised in this cycle, by rank
            gives, takes = [0] * SEMAPHORES, [0] * SEMAPHORES

            # -- done (from the registers)
            idle = all(e.state == "idle" for e in eng.values())
            if fault and idle and rd is None:
                res.busy["fetch"] += ir_valid     # an instruction left in the fetch unit
                break
            if not fault and ended and idle and rd is None and not any(
                    e.queue for e in eng.values()):
                break

            # -- read channel: grant (fetch first) and an R handshake
            fetch_req = not fault and not ended and not ir_valid and not fetching
            grant = None
            if rd is None and (fetch_req or le.state == "req"):
                grant = "fetch" if fetch_req else "load"
            beat = None                  # the taken R beat: its byte count (load) or True
            if rd is not None and t >= rd["avail"]:
                if rd["owner"] == "fetch":
                    beat = True
                else:
                    b = le.bursts[0]
                    if (cnt == 0) if b.fast else (cnt <= 1):
                        beat = b.beats[rd["k"]]
            if fetch_req or fetching or ir_valid:
                res.busy["fetch"] += 1

            # -- dispatch
            push = None
            ended_next, ir_valid_next = ended, ir_valid
            if ir_valid and not fault:
                idx, ins = ir
                if ins.op == Op.END:
                    ended_next, ir_valid_next = True, False
                elif ins.op in ENGINE:
                    q = eng[ENGINE[ins.op]].queue
                    if len(q) < QUEUE_DEPTH:
                        push = (q, (idx, ins))
                        ir_valid_next = False
                    else:
                        res.stalls["fetch"] += 1
                else:
                    faults.append((0, Error.BAD_OPCODE,
                                   f"instruction {idx}: unknown opcode {ins.op:#x}"))
                    ir_valid_next = False

            # -- starts: load, compute, store; tokens taken in that order
            starts = []
            for e in (le, ce, se):
                if e.state != "idle" or not e.queue or fault:
                    continue
                ins = e.queue[0][1]
                mask = [s for s in range(SEMAPHORES) if ins.wait >> s & 1]
                if all(sems[s] > takes[s] for s in mask):
                    for s in mask:
                        takes[s] += 1
                    starts.append(e)
                else:
                    res.stalls[e.name] += 1
            for e in (le, ce, se):
                if e.state != "idle" or e in starts:
                    res.busy[e.name] += 1

            # -- deadlock
            blocked = ended or (ir_valid and ir[1].op in ENGINE and ir[1].op != Op.END
                                and push is None)
            if (not fault and blocked and idle and rd is None and not starts
                    and any(e.queue for e in eng.values())):
                faults.append((5, Error.DEADLOCK, "deadlock: every queued instruction waits "
                                                  "for a token nobody can give"))

            # -- engines
            finishes = []
            # load
            if le.state == "prep":
                le.state = "check"
            elif le.state == "check":
                f = check(cfg, le.ins)
                if f is not None:
                    faults.append((1, f.code, f"instruction {le.index}: {f}"))
                    res.trace.append((le.index, "load", le.start, t))
                    le.state = "idle"
                else:
                    le.bursts = _plan(cfg, le.ins)
                    le.state = "req" if le.bursts else "drain"
            elif le.state == "req":
                if grant == "load":
                    le.state = "data"
            elif le.state == "data":
                if beat is not None and rd["k"] == rd["n"] - 1:
                    le.bursts.pop(0)
                    le.state = "req" if le.bursts else "drain"
            elif le.state == "drain":
                if cnt == 0:
                    load(cfg, le.ins, mem, bufs)
                    finishes.append(le)
            # compute
            if ce.state == "exec":
                if ce.fault is not None:
                    if t >= ce.fault_at:
                        faults.append((2, ce.fault[0], ce.fault[1]))
                        res.trace.append((ce.index, "compute", ce.start, t))
                        ce.state = "idle"
                elif t == ce.end:
                    finishes.append(ce)
            # store
            if se.state == "prep":
                se.state = "check"
            elif se.state == "check":
                f = check(cfg, se.ins)
                if f is not None:
                    faults.append((3, f.code, f"instruction {se.index}: {f}"))
                    res.trace.append((se.index, "store", se.start, t))
                    se.state = "idle"
                else:
                    se.bursts = _plan(cfg, se.ins)
                    se.state = "aw" if se.bursts else "fin"
            elif se.state == "aw":          # AW handshake (the memory is always ready)
                b = se.bursts[0]
                se.state, se.sent, se.wv, se.issued, se.beat = "w", 0, False, 0, 0
                if b.row_start:
                    se.items, se.ib, se.rb = b.items, b.ib, b.rb
                    se.i_issued, se.i_done, se.rv = 0, 0, False
            elif se.state == "w":
                b = se.bursts[0]
                n = len(b.beats)
                if b.fast:
                    sent = se.wv
                    if sent:
                        se.sent += 1
                    se.wv = se.issued < n
                    se.issued += se.wv
                    if sent and se.sent == n:
                        se.state, se.b_at = "b", t + self.lb
                elif se.wv:                 # the beat goes out, the packer holds
                    se.wv = False
                    se.sent += 1
                    if se.sent == n:
                        se.state, se.b_at = "b", t + self.lb
                else:
                    if se.rv:
                        se.i_done += 1
                        if min(se.rb, se.i_done * se.ib // 8) == b.beats[se.beat]:
                            se.wv = True
                            se.beat += 1
                    se.rv = se.i_issued < se.items
                    se.i_issued += se.rv
            elif se.state == "b":
                if t >= se.b_at:
                    se.bursts.pop(0)
                    se.state = "aw" if se.bursts else "fin"
            elif se.state == "fin":
                store(cfg, se.ins, mem, bufs[Space.ABUF])
                finishes.append(se)

            for e in finishes:
                for s in range(SEMAPHORES):
                    if e.ins.signal >> s & 1:
                        gives[s] += 1
                res.trace.append((e.index, e.name, e.start, t))
                e.state = "idle"

            for e in starts:
                idx, ins = e.queue.popleft()
                e.ins, e.index, e.start = ins, idx, t
                if e is ce:
                    e.state, e.fault, e.fault_at = "exec", None, t + 1
                    runs = self.compute is True or bool(self.compute and ins.op in self.compute)
                    try:
                        if not runs:
                            raise CoreFault(Error.BAD_OPCODE, f"compute opcode {ins.op:#x}: "
                                                              f"no compute engine")
                        cyc = core_ops.execute(cfg, ins, bufs[Space.ABUF], bufs[Space.WBUF],
                                               bufs[Space.TBUF])
                        if ins.op == Op.MATMUL:
                            e.end = t + max(2, int(cyc)) - 1
                        else:                   # the row engine's done: its last cycle
                            e.end = t + int(cyc)
                    except CoreFault as f:
                        e.fault = (f.code, f"instruction {idx}: {f}")
                        if runs:
                            e.fault_at = t + row_fault_delay(cfg, ins, bufs[Space.TBUF])
                else:
                    e.state = "prep"

            # -- registers
            for s in range(SEMAPHORES):
                v = sems[s] - takes[s] + gives[s]
                if v > SEM_MAX:
                    faults.append((4, Error.SEMAPHORE, f"semaphore {s} given a token "
                                                       f"beyond {SEM_MAX}"))
                sems[s] = v & 0xFF
            if push is not None:
                push[0].append(push[1])
            ended, ir_valid = ended_next, ir_valid_next
            cnt = beat if (beat is not None and rd["owner"] == "load"
                           and not le_fast(rd)) else max(0, cnt - 1)
            if beat is not None:
                rd["k"] += 1
                if rd["k"] == rd["n"]:
                    if rd["owner"] == "fetch":
                        fetching, ir_valid = False, True
                        ir = (fetched, decode(mem.read(pc, INSTR_BYTES)))
                        fetched += 1
                        pc = (pc + INSTR_BYTES) & MASK32
                    rd = None
                else:
                    rd["avail"] = max(rd["ar"] + self.lr + rd["k"] * self.rbc, t + 1)
            if grant is not None:
                n = nb_fetch if grant == "fetch" else len(le.bursts[0].beats)
                rd = {"owner": grant, "ar": t + 1, "n": n, "k": 0, "avail": t + 1 + self.lr,
                      "fast": grant == "load" and le.bursts[0].fast}
                fetching = fetching or grant == "fetch"
            if faults and not fault:
                faults.sort(key=lambda f: f[0])
                fault, res.message = faults[0][1], faults[0][2]
            t += 1

        res.cycles = t + 1
        res.error = fault
        res.instrs = fetched
        res.sems = list(sems)
        res.dram = mem.image(dram)
        res.abuf, res.wbuf, res.tbuf = bufs[Space.ABUF], bufs[Space.WBUF], bufs[Space.TBUF]
        return res


def row_fault_delay(config, ins, tbuf):
    """Cycles from a faulting compute instruction's start to the cycle its fault is
    registered: 1, except a ROWOP whose kind, row length and format header pass the checks
    in t + 1 (:mod:`hdl.core`): its fault (unsorted thresholds, outliers, the rows' or the
    table's extent) is found by the row engine after the format's thresholds (and NORM's
    centroids) and registered with its done."""
    if ins.op != Op.ROWOP:
        return 1
    kind, a = ins.sub, ins.args
    if kind not in (RowKind.LUT, RowKind.SOFTMAX, RowKind.NORM):
        return 1
    limit = config.max_tokens if kind == RowKind.SOFTMAX else config.max_row
    if not 1 <= a["length"] <= limit:
        return 1
    words = len(tbuf) // 4
    fmt = a["fmt"]
    if fmt + 1 > words:
        return 1
    ba = tbuf[4 * fmt]
    max_ba = config.lut_ba if kind == RowKind.LUT else config.row_ba
    if not 1 <= ba <= max_ba or fmt + (2 << ba) > words:
        return 1
    J = 1 << ba
    nfmt = 2 * J - 1 if kind == RowKind.NORM else J - 1
    # header and format streams (RE_STREAM each), the words one a cycle, the last
    # sortedness compare and the done register
    return 2 * RE_STREAM + nfmt + 3


def le_fast(rd):
    return rd["fast"]
