"""The KLLM core's instruction set: opcodes, fields, binary encoding, error codes.

Shared by the compiler and interpreter (golden/) and the core's decoder (hdl/), so the
bit positions have one source of truth.  docs/ARCHITECTURE.md ("The KLLM core")
explains the machine; in short:

* An instruction is 256 bits: eight little-endian 32-bit words, 32 bytes in memory.
  Word 0 holds ``opcode`` (bits 7:0), ``wait`` (15:8), ``signal`` (23:16) and the
  opcode's ``sub`` field (31:24); words 1..7 are the opcode's operands (:data:`FIELDS`).
* Three engines take instructions in program order from their own queues: **load**
  (LOAD: external memory -> an on-chip buffer), **compute** (MATMUL, ROWOP, ADD) and
  **store** (STORE: activation buffer -> external memory).  END ends the program.
* Dependencies are **tokens**: eight counting semaphores.  An instruction starts only when
  every semaphore in its ``wait`` mask is non-zero, takes one token from each as it starts,
  and gives one token to every semaphore in its ``signal`` mask when it has finished.
* On-chip buffers (byte addresses, each from 0): ``ABUF`` activations (signed 16-bit
  elements), ``WBUF`` weight slots (one IMU tile each, :func:`slot_layout`), ``TBUF``
  tables (signed 32-bit words: quantizer formats, lookup tables, per-channel factors).
"""

from dataclasses import dataclass

__all__ = ["INSTR_BYTES", "INSTR_WORDS", "SEMAPHORES", "Op", "Space", "LoadMode", "StoreMode",
           "RowKind", "Error", "ENGINE", "FIELDS", "Instr", "encode", "decode", "encode_program",
           "decode_program", "SlotLayout", "slot_layout", "FORMAT_HEADER_WORDS",
           "format_words", "affine_words", "KllmIsaError", "CoreFault", "OP_NAMES", "ERROR_NAMES",
           "SEM_MAX"]

INSTR_WORDS = 8
INSTR_BYTES = 4 * INSTR_WORDS
#: Counting semaphores (tokens) between the engines; each counts 0..SEM_MAX.
SEMAPHORES = 8
SEM_MAX = 255


class KllmIsaError(ValueError):
    """An instruction that cannot be encoded (a field out of its range)."""


class CoreFault(Exception):
    """A program fault as the core reports it: ``code`` (an :class:`Error` value) and a
    sentence for people.  Raised by the interpreter's instruction semantics."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Op:
    END = 0x00
    LOAD = 0x01
    STORE = 0x02
    MATMUL = 0x10
    ROWOP = 0x11
    ADD = 0x12


OP_NAMES = {v: k for k, v in vars(Op).items() if not k.startswith("_")}

#: The engine that executes each opcode.
ENGINE = {Op.END: "fetch", Op.LOAD: "load", Op.STORE: "store", Op.MATMUL: "compute",
          Op.ROWOP: "compute", Op.ADD: "compute"}


class Space:
    """On-chip buffers a LOAD writes (``sub`` bits 1:0)."""
    ABUF = 0
    WBUF = 1
    TBUF = 2


class LoadMode:
    """How a LOAD lays its rows down (``sub`` bits 3:2)."""
    LINEAR = 0       # row r at sram_addr + r * sram_stride, bytes in order
    LANES = 1        # WBUF index section only: row r is lane r's indices (K in order)


class StoreMode:
    """How a STORE reads its elements (``sub``)."""
    INT16 = 0        # each 16-bit element as two bytes, little endian
    PACK = 1         # each element's low ``bw`` bits, packed little-endian into bytes (indices)


class RowKind:
    """What a ROWOP computes on each row after the quantizer (``sub``)."""
    LUT = 0          # out = table[idx]                     (elementwise: GELU, a plain quantize)
    SOFTMAX = 1      # out = softmax of the row's indices    (histogram softmax unit)
    NORM = 2         # out = LayerNorm of the row's indices  (histogram norm unit)


class Error:
    """The sticky error code in the status register (0: none).  A program that fails ends
    with ``done`` and the first error's code; the engines stop taking instructions."""
    NONE = 0
    BAD_OPCODE = 1       # an opcode not in Op, or a sub field out of range
    BAD_ADDRESS = 2      # an on-chip access outside its buffer (start or extent)
    OVERFLOW = 3         # a count beyond a unit's capacity (K > k_max, lanes > L, row too long...)
    DEADLOCK = 4         # every engine waits for a token nobody can give
    BUS = 5              # the external memory answered SLVERR or DECERR
    SEMAPHORE = 6        # a token given to a semaphore already at SEM_MAX


ERROR_NAMES = {v: k for k, v in vars(Error).items() if not k.startswith("_")}

#: Operand fields of each opcode: (name, word, low bit, bits).  ``sub`` is word 0, 31:24.
FIELDS = {
    Op.END: [],
    # sub = space | mode << 2
    Op.LOAD: [("dram_addr", 1, 0, 32), ("dram_stride", 2, 0, 32), ("sram_addr", 3, 0, 32),
              ("sram_stride", 4, 0, 32), ("rows", 5, 0, 16), ("row_bytes", 6, 0, 32)],
    # sub = StoreMode; row_bytes counts external-memory bytes
    Op.STORE: [("dram_addr", 1, 0, 32), ("dram_stride", 2, 0, 32), ("sram_addr", 3, 0, 32),
               ("sram_stride", 4, 0, 32), ("rows", 5, 0, 16), ("row_bytes", 6, 0, 32)],
    # sub = weight slot
    Op.MATMUL: [("x_addr", 1, 0, 32), ("x_stride", 2, 0, 32), ("tokens", 3, 0, 16),
                ("k", 3, 16, 16), ("lanes", 4, 0, 16), ("outliers", 4, 16, 8),
                ("fmt", 5, 0, 32), ("y_addr", 6, 0, 32), ("y_tstride", 7, 0, 16),
                ("y_nstride", 7, 16, 16)],
    # sub = RowKind.  fmt: a quantizer format (TBUF word address); table: LUT entries,
    # the softmax exp table or the norm's affine (TBUF word address); outliers: NORM only
    Op.ROWOP: [("src", 1, 0, 32), ("src_stride", 2, 0, 32), ("rows", 3, 0, 16),
               ("length", 3, 16, 16), ("fmt", 4, 0, 32), ("table", 5, 0, 32),
               ("dst", 6, 0, 32), ("dst_stride", 7, 0, 16), ("out_shift", 7, 16, 8),
               ("outliers", 7, 24, 8)],
    # out = sat16(a + ((b * M[c] + B[c] + round) >> sh)) per column c, (sh, M, B) in TBUF
    # at ``params`` (:func:`affine_words`); a, b and dst rows ``stride`` bytes apart
    Op.ADD: [("a", 1, 0, 32), ("b", 2, 0, 32), ("rows", 3, 0, 16), ("length", 3, 16, 16),
             ("stride", 4, 0, 32), ("params", 5, 0, 32), ("dst", 6, 0, 32)],
}


@dataclass
class Instr:
    """One instruction: opcode, tokens, ``sub`` and the operand fields by name."""
    op: int
    wait: int = 0
    signal: int = 0
    sub: int = 0
    args: dict = None
    note: str = ""           # for listings only, not encoded

    def __post_init__(self):
        self.args = dict(self.args or {})
        for name, _, _, _ in FIELDS.get(self.op, []):      # fields not given are 0
            self.args.setdefault(name, 0)

    @property
    def engine(self):
        return ENGINE.get(self.op, "fetch")

    def __getattr__(self, name):
        args = self.__dict__.get("args") or {}
        if name in args:
            return args[name]
        raise AttributeError(name)

    def text(self):
        """One listing line, e.g. ``LOAD  w=01 s=02 sub=1 dram_addr=4096 ...``."""
        name = OP_NAMES.get(self.op, f"op{self.op:#04x}")
        fields = " ".join(f"{k}={v}" for k, v in self.args.items())
        note = f"  ; {self.note}" if self.note else ""
        return (f"{name:<6} w={self.wait:02x} s={self.signal:02x} sub={self.sub} "
                f"{fields}{note}")


def _put(words, word, lo, bits, value, name):
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise KllmIsaError(f"field '{name}' must be an integer in 0..{(1 << bits) - 1}, "
                           f"got {value!r}")
    words[word] |= value << lo


def encode(instr):
    """The 32 bytes of ``instr``."""
    if instr.op not in FIELDS:
        raise KllmIsaError(f"unknown opcode {instr.op!r}")
    words = [0] * INSTR_WORDS
    _put(words, 0, 0, 8, instr.op, "opcode")
    _put(words, 0, 8, 8, instr.wait, "wait")
    _put(words, 0, 16, 8, instr.signal, "signal")
    _put(words, 0, 24, 8, instr.sub, "sub")
    names = {f[0] for f in FIELDS[instr.op]}
    extra = set(instr.args) - names
    if extra:
        raise KllmIsaError(f"{OP_NAMES[instr.op]} has no field(s) {', '.join(sorted(extra))}")
    for name, word, lo, bits in FIELDS[instr.op]:
        _put(words, word, lo, bits, instr.args.get(name, 0), name)
    return b"".join(w.to_bytes(4, "little") for w in words)


def decode(data):
    """The :class:`Instr` of 32 bytes.  An unknown opcode decodes with no fields (the core
    reports it as :attr:`Error.BAD_OPCODE` when it is dispatched)."""
    if len(data) != INSTR_BYTES:
        raise KllmIsaError(f"an instruction is {INSTR_BYTES} bytes, got {len(data)}")
    words = [int.from_bytes(data[4 * i:4 * i + 4], "little") for i in range(INSTR_WORDS)]
    w0 = words[0]
    op, wait, signal, sub = w0 & 0xFF, (w0 >> 8) & 0xFF, (w0 >> 16) & 0xFF, w0 >> 24
    args = {}
    for name, word, lo, bits in FIELDS.get(op, []):
        args[name] = (words[word] >> lo) & ((1 << bits) - 1)
    return Instr(op, wait, signal, sub, args)


def encode_program(instrs):
    return b"".join(encode(i) for i in instrs)


def decode_program(data):
    if len(data) % INSTR_BYTES:
        raise KllmIsaError(f"a program is a whole number of {INSTR_BYTES}-byte instructions, "
                           f"got {len(data)} bytes")
    return [decode(data[i:i + INSTR_BYTES]) for i in range(0, len(data), INSTR_BYTES)]


# ------------------------------------------------------------------ buffer layouts

@dataclass(frozen=True)
class SlotLayout:
    """Byte offsets inside one WBUF slot (one IMU tile of L lanes x depth rows of P indices).

    * ``index``: ``depth`` rows x L lanes, each entry the P indices of one beat packed at
      ``bw`` bits (lowest first), ``entry_bytes`` bytes; entry (row, lane) at
      ``index + (row * L + lane) * entry_bytes``.  A LINEAR load of a prepared tile fills
      whole rows (every lane at once); a LANES load fills lane by lane.
    * ``codebook``: L lanes x 2**bw centroids, one signed byte each (cw <= 8).
    * ``requant``: the shift (one word), then L lanes x (M, B): M a signed 32-bit word, B a
      signed 64-bit integer as two words (low first) -- :func:`affine_words`.
    """
    entry_bytes: int
    index: int
    codebook: int
    requant: int
    size: int          # bytes used
    stride: int        # slot s starts at s * stride


def slot_layout(outputs, elems, bw, depth):
    entry = -(-elems * bw // 8)
    index = 0
    codebook = depth * outputs * entry
    requant = codebook + outputs * 2 ** bw
    size = requant + 4 + 12 * outputs
    stride = 1 << (size - 1).bit_length()
    return SlotLayout(entry, index, codebook, requant, size, stride)


#: A quantizer format in TBUF (32-bit words): word 0 = ba | shift << 8, then 2**ba - 1
#: thresholds (in the input's units), then 2**ba centroids (``Ca``, in units of 2**shift).
FORMAT_HEADER_WORDS = 1


def affine_words(M, B, sh):
    """Per-column requantization ``(x * M[c] + B[c] + 2**(sh-1)) >> sh`` as 32-bit words:
    ``sh``, then for each column M, B low, B high (B a signed 64-bit integer)."""
    words = [sh]
    for m, b in zip(M, B):
        b &= (1 << 64) - 1
        words += [m, b & 0xFFFFFFFF, b >> 32]
    return words


def format_words(ba, shift, thresholds, centroids):
    """The TBUF words of one quantizer format."""
    thresholds, centroids = list(thresholds), list(centroids)
    if len(thresholds) != 2 ** ba - 1 or len(centroids) != 2 ** ba:
        raise KllmIsaError(f"a {ba}-bit format has {2 ** ba - 1} thresholds and {2 ** ba} "
                           f"centroids, got {len(thresholds)} and {len(centroids)}")
    return [ba | shift << 8] + thresholds + centroids


# ------------------------------------------------------------------ the core's machine

#: Instructions each engine's queue holds (load, compute, store).
QUEUE_DEPTH = 4

#: An AXI4 burst never crosses a multiple of this many bytes: the 4 KiB rule, and at most
#: 256 beats (``min(4096, 256 * bus_bytes)``).
def burst_boundary(bus_bytes):
    return min(4096, 256 * bus_bytes)


#: The program address is a multiple of this (one instruction); the low bits of PROG_ADDR
#: read as 0.
PROG_ALIGN = INSTR_BYTES


class Reg:
    """The core's control and status registers on its AXI4-Lite slave (byte addresses,
    32-bit registers; writes to read-only registers are ignored, unmapped reads give 0).

    * ``ID`` (RO) :data:`CORE_ID`; ``VERSION`` (RO) :data:`CORE_VERSION`;
      ``CONFIG`` (RO): ``bus_bytes`` (7:0), :data:`QUEUE_DEPTH` (15:8), :data:`SEMAPHORES`
      (23:16), ``slots`` (31:24).
    * ``CTRL`` (W): bit 0 START (ignored while busy): clears ``done``, the error, the
      counters, the semaphores and the queues, and runs the program at ``PROG_ADDR``.
      Reads as 0.
    * ``STATUS`` (RO): bit 0 busy, bit 1 done, bits 15:8 the error code (:class:`Error`).
    * ``PROG_ADDR`` (RW): the first instruction's address (bits 4:0 read as 0).
    * ``FAULT_PC`` (RO): the address of the last instruction fetched (after an error: the
      fetch unit's position when it stopped, for people).
    * ``CYCLES``: cycles from start to done (both included).
    * ``BUSY_*``: cycles each engine was busy: the fetch unit while it requests, receives or
      holds an instruction; an engine from the cycle it starts an instruction to the cycle
      it gives its tokens.
    * ``STALL_*``: cycles the fetch unit held an instruction whose queue was full; cycles an
      engine was idle with an instruction at its queue's head waiting for tokens.
    * ``INSTRS``: instructions fetched (END included).
    * ``SEM0`` + 4 s: semaphore s's count.
    """
    ID = 0x00
    VERSION = 0x04
    CONFIG = 0x08
    CTRL = 0x10
    STATUS = 0x14
    PROG_ADDR = 0x18
    FAULT_PC = 0x1C
    CYCLES = 0x20
    BUSY_FETCH = 0x24
    BUSY_LOAD = 0x28
    BUSY_COMPUTE = 0x2C
    BUSY_STORE = 0x30
    STALL_FETCH = 0x34
    STALL_LOAD = 0x38
    STALL_COMPUTE = 0x3C
    STALL_STORE = 0x40
    INSTRS = 0x44
    SEM0 = 0x60


#: ``ID`` register: "KLLM" in ASCII, K in the low byte.
CORE_ID = int.from_bytes(b"KLLM", "little")
#: ``VERSION`` register: ISA major (31:16), minor (15:0).
CORE_VERSION = 0x0001_0000

CTRL_START = 1 << 0
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR_SHIFT = 8

__all__ += ["QUEUE_DEPTH", "burst_boundary", "PROG_ALIGN", "Reg", "CORE_ID", "CORE_VERSION",
            "CTRL_START", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR_SHIFT"]
