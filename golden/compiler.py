"""Compile the integer MiniLM (golden.intmodel) and a sentence into a KLLM core program.

The result is an :class:`Image`: the external memory the core starts from (the
program, the sentence's embeddings, every layer's weight tiles and tables) and
where the answer will be.  The program runs layer after layer:

* **Prologue**: load the first tables and the embeddings ``u0``; the embedding
  LayerNorm (ROWOP NORM) writes the first hidden state ``X``.
* **Each layer** (its tables were loaded into one half of TBUF while the
  previous layer ran): Q, K and V^T (MATMUL, one weight tile of L output channels
  each, loaded into the free weight slot while the other slot computes); Q
  quantized to indices (ROWOP LUT with an identity table, one per head) and
  stored packed to external memory, from where it comes back as IMU weight tiles
  (LOAD LANES, lanes = queries); per head the score tiles S^T (MATMUL: K's rows
  stream), the softmax (ROWOP SOFTMAX), P to indices and out through external
  memory the same way, and the context tiles ctx^T (MATMUL: V^T's rows stream);
  the attention output (MATMUL), the residual (ADD), LayerNorm (ROWOP NORM), FFN
  in, GELU (ROWOP LUT), FFN out, residual, LayerNorm.
* **Epilogue**: store ``X`` of the last layer.

Tokens are placed by a dependency tracker: every instruction names the byte
ranges it reads and writes in ABUF, WBUF, TBUF and external memory; an
instruction waits for the latest earlier instruction of another engine it
depends on (read after write, write after read, write after write), through the
semaphore of that engine pair, and that instruction signals it.  Dependencies
always point backwards in program order, so a program cannot deadlock.
"""

import math
from dataclasses import dataclass, field

import torch

from base.config import CoreConfig
from base.errors import KllmError
from base.isa import (INSTR_BYTES, Instr, LoadMode, Op, RowKind, Space, StoreMode, affine_words,
                      encode_program, format_words)

__all__ = ["Image", "Program", "compile_sentence", "PAIRS", "check_fits", "run_in_order"]

#: Semaphore of each (producer engine, consumer engine) pair.
PAIRS = {("load", "compute"): 0, ("compute", "load"): 1, ("compute", "store"): 2,
         ("store", "compute"): 3, ("store", "load"): 4, ("load", "store"): 5}

D, F_DIM, HEADS, DH = 384, 1536, 12, 32
SPACES = ("abuf", "wbuf", "tbuf", "dram")


class Tracker:
    """Places tokens between engines from the byte ranges each instruction touches."""

    def __init__(self):
        self.instrs = []
        self.records = {s: [] for s in SPACES}   # (start, end, is_write, index)
        self.synced = {p: -1 for p in PAIRS}

    def emit(self, instr, reads=(), writes=()):
        me = len(self.instrs)
        engine = instr.engine
        need = {}
        for kind, ranges in ((False, reads), (True, writes)):
            for space, start, end in ranges:
                for s, e, w, j in self.records[space]:
                    if s < end and start < e and (w or kind):
                        eng = self.instrs[j].engine
                        if eng != engine:
                            need[eng] = max(need.get(eng, -1), j)
        for eng, j in need.items():
            pair = (eng, engine)
            if j > self.synced[pair]:
                bit = 1 << PAIRS[pair]
                self.instrs[j].signal |= bit
                instr.wait |= bit
                self.synced[pair] = j
        self.instrs.append(instr)
        for space, start, end in writes:
            # a write covering older records makes them redundant for later instructions
            self.records[space] = [r for r in self.records[space]
                                   if not (start <= r[0] and r[1] <= end)]
            self.records[space].append((start, end, True, me))
        for space, start, end in reads:
            self.records[space].append((start, end, False, me))
        return instr


def _span(space, addr, rows, stride, row_bytes):
    return (space, addr, addr + (rows - 1) * stride + row_bytes) if rows and row_bytes else (space, addr, addr)


@dataclass
class Program:
    instrs: list
    config: CoreConfig

    def listing(self):
        return "\n".join(f"{k:5d}  {i.text()}" for k, i in enumerate(self.instrs))

    def counts(self):
        out = {}
        for i in self.instrs:
            name = {Op.LOAD: "LOAD", Op.STORE: "STORE", Op.MATMUL: "MATMUL", Op.ROWOP: "ROWOP",
                    Op.ADD: "ADD", Op.END: "END"}[i.op]
            out[name] = out.get(name, 0) + 1
        return out


@dataclass
class Image:
    """External memory and where things are in it."""
    dram: bytearray
    program: Program
    prog_addr: int
    out_addr: int
    tokens: int
    layers: int
    regions: dict = field(default_factory=dict)     # name -> (addr, bytes)
    abuf_used: int = 0

    def output(self, dram=None):
        """The last hidden state (T, d) int16 read from ``dram`` (default: this image's)."""
        mem = self.dram if dram is None else dram
        raw = bytes(mem[self.out_addr:self.out_addr + self.tokens * D * 2])
        return torch.frombuffer(bytearray(raw), dtype=torch.int16).long().view(self.tokens, D)


class _Dram:
    def __init__(self, align=64):
        self.blobs, self.top, self.align, self.regions = [], 0, align, {}

    def place(self, name, data=None, size=None):
        size = len(data) if data is not None else size
        addr = self.top
        self.top = -(-(addr + size) // self.align) * self.align
        if data is not None:
            self.blobs.append((addr, bytes(data)))
        self.regions[name] = (addr, size)
        return addr

    def image(self):
        mem = bytearray(self.top)
        for addr, data in self.blobs:
            mem[addr:addr + len(data)] = data
        return mem


def _words_bytes(words):
    return b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)


def _fmt_words(fmt):
    return format_words(fmt.ba, fmt.shift, fmt.thresholds.tolist(), fmt.Ca.tolist())


class _Tables:
    """One TBUF blob: words placed one after another, addresses relative to a base."""

    def __init__(self, base):
        self.base, self.words, self.at = base, [], {}

    def add(self, name, words):
        self.at[name] = self.base + len(self.words)
        self.words += list(words)
        return self.at[name]

    def __getitem__(self, name):
        return self.at[name]


def _tile_images(cfg, Iw, Cw, M, B, sh):
    """Per tile of L output channels: (index rows bytes, codebook + requant bytes)."""
    L, P, bw = cfg.outputs, cfg.elems, cfg.bw
    N, K = Iw.shape
    rows = -(-K // P)
    lay = cfg.slot
    tiles = []
    for n0 in range(0, N, L):
        n1 = min(N, n0 + L)
        idx = torch.zeros(L, rows * P, dtype=torch.long)
        idx[:n1 - n0, :K] = Iw[n0:n1]
        ent = idx.view(L, rows, P)
        word = sum(ent[..., e] << (bw * e) for e in range(P))             # (L, rows)
        entries = word.T.contiguous()                                      # (rows, L)
        raw = bytearray()
        for v in entries.flatten().tolist():
            raw += int(v).to_bytes(lay.entry_bytes, "little")
        cb = torch.zeros(L, 1 << bw, dtype=torch.long)
        cb[:n1 - n0] = Cw[n0:n1]
        Mt = torch.zeros(L, dtype=torch.long)
        Bt = torch.zeros(L, dtype=torch.long)
        Mt[:n1 - n0], Bt[:n1 - n0] = M[n0:n1], B[n0:n1]
        tail = bytes((v & 0xFF) for v in cb.flatten().tolist())
        tail += _words_bytes(affine_words(Mt.tolist(), Bt.tolist(), sh))
        tiles.append((bytes(raw), tail, n1 - n0))
    return tiles


def _head_tail(cfg, Ca, M, sh):
    """Codebook + requant section of an attention tile: every lane the same."""
    L = cfg.outputs
    cb = bytes((int(v) & 0xFF) for v in Ca.tolist()) * L
    return cb + _words_bytes(affine_words([int(M)] * L, [0] * L, sh))


def check_fits(cfg, im):
    """Refuse an integer model the core cannot run (index bits, outliers)."""
    c = im.cfg
    problems = []
    if c.kv_per_head:
        problems.append("the compiler takes one K and one V^T format per layer "
                        "(IntConfig.kv_per_head=False)")
    if c.bw != cfg.bw:
        problems.append(f"weights have {c.bw}-bit indices, the core's IMU bw={cfg.bw}")
    for name, need, have in (("ba", max(c.ba, c.attn_ba), cfg.ba),
                             ("row_ba", max(c.sm_ba, c.ln_ba), cfg.row_ba),
                             ("lut_ba", c.lut_ba, cfg.lut_ba),
                             ("outliers", max(c.outliers, c.k_outliers, c.v_outliers,
                                              c.ln_outliers), cfg.outliers)):
        if need > have:
            problems.append(f"the model needs {name}={need}, the core has {have}")
    if problems:
        raise KllmError("the core cannot run this model: " + "; ".join(problems))


def compile_sentence(im, emb, cfg=None, layers=None):
    """An :class:`Image` that runs ``layers`` (default all) encoder layers of the integer
    model ``im`` on one sentence's embeddings ``emb`` (T, d) float."""
    cfg = cfg or CoreConfig()
    check_fits(cfg, im)
    n_layers = len(im.layers) if layers is None else layers
    if not 0 <= n_layers <= len(im.layers):
        raise KllmError(f"layers must be in 0..{len(im.layers)}, got {n_layers}")
    T = emb.shape[0]
    if not 1 <= T <= cfg.max_tokens:
        raise KllmError(f"the sentence has {T} tokens; the core takes 1..{cfg.max_tokens} "
                        f"(--set max_tokens=...)")
    P, L = cfg.elems, cfg.outputs
    Tp = -(-T // P) * P
    lay = cfg.slot
    tr = Tracker()
    dram = _Dram()

    # ---- ABUF arena (bytes): X | Y | X1 | Q | VT | S, F over Q..
    def grow(size):
        return -(-size // 64) * 64

    ab = {}
    top = 0
    for name, size in (("X", T * D), ("Y", T * D), ("X1", T * D)):
        ab[name] = top
        top += grow(2 * size)
    shared = top
    for name, size in (("Q", T * D), ("VT", D * Tp), ("S", T * Tp)):
        ab[name] = top
        top += grow(2 * size)
    ab["F"] = shared
    top = max(top, shared + grow(2 * T * F_DIM))
    if top > cfg.abuf_bytes:
        raise KllmError(f"a {T}-token sentence needs {math.ceil(top / 1024)} KiB of activation "
                        f"buffer; the core has {cfg.abuf_kb} KiB (--set abuf_kb=... or a shorter "
                        f"sentence)")

    # ---- external memory: tables, weights, input, scratch, output
    half = cfg.tbuf_words // 2
    blobs = []

    def layer_tables(i, base):
        t = _Tables(base)
        Lr = im.layers[i]
        t.add("attn_in", _fmt_words(Lr.qkv[0].fmt))
        for h in range(HEADS):
            t.add(f"q{h}", _fmt_words(Lr.q_fmt[h]))
        t.add("k", _fmt_words(Lr.k_fmt[0]))
        t.add("v", _fmt_words(Lr.v_fmt[0]))
        t.add("ident", list(range(1 << cfg.bw)))
        t.add("scores", _fmt_words(Lr.s_fmt))
        t.add("exp", Lr.exp.flatten().tolist())
        t.add("p", _fmt_words(Lr.p_fmt))
        t.add("ctx", _fmt_words(Lr.attn_out.fmt))
        t.add("add_a", affine_words(Lr.add_a[0].tolist(), [0] * D, Lr.add_a[1]))
        t.add("ln_a", _fmt_words(Lr.ln_a.fmt))
        t.add("ln_a_aff", affine_words(Lr.ln_a.G.tolist(), Lr.ln_a.B.tolist(), Lr.ln_a.sh))
        t.add("ffn_in", _fmt_words(Lr.ffn_in.fmt))
        t.add("gelu_fmt", _fmt_words(Lr.gelu_fmt))
        t.add("gelu", Lr.gelu.tolist())
        t.add("ffn_mid", _fmt_words(Lr.ffn_out.fmt))
        t.add("add_f", affine_words(Lr.add_f[0].tolist(), [0] * D, Lr.add_f[1]))
        t.add("ln_f", _fmt_words(Lr.ln_f.fmt))
        t.add("ln_f_aff", affine_words(Lr.ln_f.G.tolist(), Lr.ln_f.B.tolist(), Lr.ln_f.sh))
        if len(t.words) > half:
            raise KllmError(f"layer {i}'s tables take {len(t.words)} words; half the table "
                            f"buffer is {half} (--set tbuf_kb=...)")
        return t

    pro = _Tables(half)        # the prologue's tables sit in the second half
    pro.add("ln_emb", _fmt_words(im.ln_emb.fmt))
    pro.add("ln_emb_aff", affine_words(im.ln_emb.G.tolist(), im.ln_emb.B.tolist(), im.ln_emb.sh))
    pro_addr = dram.place("tables.prologue", _words_bytes(pro.words))
    for i in range(n_layers):
        t = layer_tables(i, (i % 2) * half)
        blobs.append((t, dram.place(f"tables.layer{i}", _words_bytes(t.words))))

    weights = {}
    for i in range(n_layers):
        Lr = im.layers[i]
        for nm, lin in (("q", Lr.qkv[0]), ("k", Lr.qkv[1]), ("v", Lr.qkv[2]),
                        ("attn_out", Lr.attn_out), ("ffn_in", Lr.ffn_in), ("ffn_out", Lr.ffn_out)):
            tiles = []
            for j, (idx, tail, n) in enumerate(_tile_images(cfg, lin.Iw, lin.Cw, lin.rq.M, lin.rq.B,
                                                            lin.rq.sh)):
                a = dram.place(f"w.layer{i}.{nm}.{j}.index", idx)
                b = dram.place(f"w.layer{i}.{nm}.{j}.tail", tail)
                tiles.append((a, len(idx), b, len(tail), n))
            weights[(i, nm)] = tiles
        for h in range(HEADS):
            weights[(i, "q", h)] = dram.place(f"att.layer{i}.q{h}", _head_tail(
                cfg, Lr.q_fmt[h].Ca, Lr.s_rq[h].M[0], Lr.s_rq[h].sh))
        weights[(i, "p")] = dram.place(f"att.layer{i}.p", _head_tail(
            cfg, Lr.p_fmt.Ca, Lr.ctx_rq.M[0], Lr.ctx_rq.sh))
    tail_bytes = lay.size - lay.codebook
    u0 = im.embed_int(emb).to(torch.int16)
    in_addr = dram.place("input", u0.numpy().tobytes())
    qidx_addr = dram.place("scratch.qidx", size=T * D * cfg.bw // 8)
    pidx_addr = [dram.place(f"scratch.pidx{b}", size=T * Tp * cfg.bw // 8) for b in range(2)]
    out_addr = dram.place("output", size=T * D * 2)

    # ---- instruction helpers
    def load(space, dram_addr, sram_addr, rows, row_bytes, dram_stride=0, sram_stride=0,
             mode=LoadMode.LINEAR, note="", lanes_slot=None):
        dram_stride = dram_stride or row_bytes
        sram_stride = sram_stride or row_bytes
        i = Instr(Op.LOAD, sub=space | mode << 2, note=note,
                  args=dict(dram_addr=dram_addr, dram_stride=dram_stride, sram_addr=sram_addr,
                            sram_stride=sram_stride, rows=rows, row_bytes=row_bytes))
        sp = {Space.ABUF: "abuf", Space.WBUF: "wbuf", Space.TBUF: "tbuf"}[space]
        if mode == LoadMode.LANES:
            w = (sp, sram_addr, sram_addr + lay.codebook)
        else:
            w = _span(sp, sram_addr, rows, sram_stride, row_bytes)
        return tr.emit(i, reads=[_span("dram", dram_addr, rows, dram_stride, row_bytes)],
                       writes=[w])

    def store(dram_addr, sram_addr, rows, row_bytes, sram_stride, mode, note=""):
        elems = row_bytes * 8 // cfg.bw if mode == StoreMode.PACK else row_bytes // 2
        i = Instr(Op.STORE, sub=mode, note=note,
                  args=dict(dram_addr=dram_addr, dram_stride=row_bytes, sram_addr=sram_addr,
                            sram_stride=sram_stride, rows=rows, row_bytes=row_bytes))
        return tr.emit(i, reads=[_span("abuf", sram_addr, rows, sram_stride, 2 * elems)],
                       writes=[_span("dram", dram_addr, rows, row_bytes, row_bytes)])

    slot_state = {"next": 0}

    def matmul(tile_loads, x, x_stride, tokens, k, lanes, outliers, fmt, y, y_t, y_n, fmt_words,
               note=""):
        s = slot_state["next"]
        slot_state["next"] = (s + 1) % cfg.slots
        base = s * lay.stride
        for spec in tile_loads:
            spec(base)
        i = Instr(Op.MATMUL, sub=s, note=note,
                  args=dict(x_addr=x, x_stride=x_stride, tokens=tokens, k=k, lanes=lanes,
                            outliers=outliers, fmt=fmt, y_addr=y, y_tstride=y_t, y_nstride=y_n))
        last = y + (tokens - 1) * y_t + (lanes - 1) * y_n + 2
        return tr.emit(i, reads=[("wbuf", base, base + lay.size),
                                 _span("abuf", x, tokens, x_stride, 2 * k),
                                 ("tbuf", 4 * fmt, 4 * (fmt + fmt_words))],
                       writes=[("abuf", y, last)])

    def rowop(kind, src, rows, length, stride, fmt, fmt_words, table, table_words, dst,
              out_shift=0, outliers=0, note=""):
        i = Instr(Op.ROWOP, sub=kind, note=note,
                  args=dict(src=src, src_stride=stride, rows=rows, length=length, fmt=fmt,
                            table=table, dst=dst, dst_stride=stride, out_shift=out_shift,
                            outliers=outliers))
        return tr.emit(i, reads=[_span("abuf", src, rows, stride, 2 * length),
                                 ("tbuf", 4 * fmt, 4 * (fmt + fmt_words)),
                                 ("tbuf", 4 * table, 4 * (table + table_words))],
                       writes=[_span("abuf", dst, rows, stride, 2 * length)])

    def add(a, b, rows, length, stride, params, dst, note=""):
        i = Instr(Op.ADD, note=note, args=dict(a=a, b=b, rows=rows, length=length, stride=stride,
                                                params=params, dst=dst))
        return tr.emit(i, reads=[_span("abuf", a, rows, stride, 2 * length),
                                 _span("abuf", b, rows, stride, 2 * length),
                                 ("tbuf", 4 * params, 4 * (params + 1 + 3 * length))],
                       writes=[_span("abuf", dst, rows, stride, 2 * length)])

    def fw(ba):
        return 1 + 2 * (1 << ba) - 1

    def linear(i, nm, x, K, fmt_name, t, outliers, y, y_t, y_n, ba):
        for j, (a, na, b, nb, n) in enumerate(weights[(i, nm)]):
            def loads(base, a=a, na=na, b=b, nb=nb, j=j):
                load(Space.WBUF, a, base, 1, na, note=f"layer{i}.{nm} tile {j} indices")
                load(Space.WBUF, b, base + lay.codebook, 1, nb, note=f"layer{i}.{nm} tile {j} codebooks")
            matmul([loads], x, 2 * K, T, K, n, outliers, t[fmt_name], y + j * L * y_n, y_t, y_n,
                   fw(ba), note=f"layer{i}.{nm} tile {j}")

    # ---- prologue
    c = im.cfg
    load(Space.TBUF, pro_addr, 4 * half, 1, 4 * len(pro.words), note="prologue tables")
    if n_layers:
        load(Space.TBUF, blobs[0][1], 0, 1, 4 * len(blobs[0][0].words), note="layer 0 tables")
    load(Space.ABUF, in_addr, ab["Y"], 1, 2 * T * D, note="embeddings u0")
    rowop(RowKind.NORM, ab["Y"], T, D, 2 * D, pro["ln_emb"], fw(c.ln_ba), pro["ln_emb_aff"],
          1 + 3 * D, ab["X"], outliers=c.ln_outliers, note="embedding LayerNorm")

    for i in range(n_layers):
        t, _ = blobs[i]
        if i + 1 < n_layers:
            nt, naddr = blobs[i + 1]
            load(Space.TBUF, naddr, 4 * nt.base, 1, 4 * len(nt.words), note=f"layer {i + 1} tables")
        X, Y, X1, Q, VT, S, F = (ab[k] for k in ("X", "Y", "X1", "Q", "VT", "S", "F"))
        K = Y                     # K lives in Y's region until the attention output
        Lr = im.layers[i]
        linear(i, "q", X, D, "attn_in", t, c.outliers, Q, 2 * D, 2, c.ba)
        linear(i, "k", X, D, "attn_in", t, c.outliers, K, 2 * D, 2, c.ba)
        linear(i, "v", X, D, "attn_in", t, c.outliers, VT, 2, 2 * Tp, c.ba)   # V^T
        # Q -> indices per head, stored packed: the score tiles' weights
        for h in range(HEADS):
            rowop(RowKind.LUT, Q + 2 * DH * h, T, DH, 2 * D, t[f"q{h}"], fw(c.bw), t["ident"],
                  1 << cfg.bw, Q + 2 * DH * h, note=f"layer{i} Q head {h} -> indices")
        store(qidx_addr, Q, T, D * cfg.bw // 8, 2 * D, StoreMode.PACK, note=f"layer{i} Q indices")
        qrow, prow = D * cfg.bw // 8, Tp * cfg.bw // 8
        for h in range(HEADS):
            # S^T: key rows of K stream against a tile of query indices (lanes = queries)
            for q0 in range(0, T, L):
                n = min(L, T - q0)

                def ql(base, h=h, q0=q0, n=n):
                    load(Space.WBUF, qidx_addr + q0 * qrow + h * DH * cfg.bw // 8, base, n,
                         DH * cfg.bw // 8, dram_stride=qrow, mode=LoadMode.LANES,
                         note=f"layer{i} Q head {h} queries {q0}..")
                    load(Space.WBUF, weights[(i, "q", h)], base + lay.codebook, 1, tail_bytes,
                         note=f"layer{i} Q head {h} codebook")
                matmul([ql], K + 2 * DH * h, 2 * D, T, DH, n, c.k_outliers, t["k"], S + q0 * 2 * Tp,
                       2, 2 * Tp, fw(c.attn_ba), note=f"layer{i} scores head {h} queries {q0}..")
            rowop(RowKind.SOFTMAX, S, T, T, 2 * Tp, t["scores"], fw(c.sm_ba), t["exp"],
                  1 << (2 * c.sm_ba), S, out_shift=1, note=f"layer{i} softmax head {h}")
            rowop(RowKind.LUT, S, T, T, 2 * Tp, t["p"], fw(c.bw), t["ident"], 1 << cfg.bw, S,
                  note=f"layer{i} P head {h} -> indices")
            pidx = pidx_addr[h % 2]
            store(pidx, S, T, prow, 2 * Tp, StoreMode.PACK, note=f"layer{i} P head {h} indices")
            # ctx^T: channel rows of V^T stream against a tile of probability indices; the
            # context of head h goes over Q's columns of head h (stored above)
            for q0 in range(0, T, L):
                n = min(L, T - q0)

                def pl(base, q0=q0, n=n, pidx=pidx, h=h):
                    load(Space.WBUF, pidx + q0 * prow, base, n, prow, mode=LoadMode.LANES,
                         note=f"layer{i} P head {h} queries {q0}..")
                    load(Space.WBUF, weights[(i, "p")], base + lay.codebook, 1, tail_bytes,
                         note=f"layer{i} P codebook")
                matmul([pl], VT + 2 * Tp * DH * h, 2 * Tp, DH, T, n, c.v_outliers, t["v"],
                       Q + q0 * 2 * D + 2 * DH * h, 2, 2 * D, fw(c.attn_ba),
                       note=f"layer{i} context head {h} queries {q0}..")
        # attention output, residual, LayerNorm (Y: K's region, free now)
        linear(i, "attn_out", Q, D, "ctx", t, c.outliers, Y, 2 * D, 2, c.ba)
        add(Y, X, T, D, 2 * D, t["add_a"], Y, note=f"layer{i} residual")
        rowop(RowKind.NORM, Y, T, D, 2 * D, t["ln_a"], fw(c.ln_ba), t["ln_a_aff"], 1 + 3 * D, X1,
              outliers=c.ln_outliers, note=f"layer{i} attention LayerNorm")
        # FFN (F over Q, V^T, S: free now)
        linear(i, "ffn_in", X1, D, "ffn_in", t, c.outliers, F, 2 * F_DIM, 2, c.ba)
        rowop(RowKind.LUT, F, T, F_DIM, 2 * F_DIM, t["gelu_fmt"], fw(c.lut_ba), t["gelu"],
              1 << c.lut_ba, F, note=f"layer{i} GELU")
        linear(i, "ffn_out", F, F_DIM, "ffn_mid", t, c.outliers, Y, 2 * D, 2, c.ba)
        add(Y, X1, T, D, 2 * D, t["add_f"], Y, note=f"layer{i} residual")
        rowop(RowKind.NORM, Y, T, D, 2 * D, t["ln_f"], fw(c.ln_ba), t["ln_f_aff"], 1 + 3 * D, X,
              outliers=c.ln_outliers, note=f"layer{i} FFN LayerNorm")

    store(out_addr, ab["X"], T, 2 * D, 2 * D, StoreMode.INT16, note="last hidden state")
    tr.emit(Instr(Op.END, note="end"))
    # the program goes first: shift every address by its size
    prog = Program(tr.instrs, cfg)
    size = len(tr.instrs) * INSTR_BYTES
    shift = -(-size // 4096) * 4096
    for ins in tr.instrs:
        if ins.op in (Op.LOAD, Op.STORE):
            ins.args["dram_addr"] += shift
    mem = bytearray(shift) + dram.image()
    mem[0:size] = encode_program(tr.instrs)
    regions = {k: (a + shift, n) for k, (a, n) in dram.regions.items()}
    regions["program"] = (0, size)
    return Image(mem, prog, 0, out_addr + shift, T, n_layers, regions, top)


# ------------------------------------------------------------- program-order reference

def run_in_order(image, cfg=None):
    """Execute the image's program one instruction after another, in program order, and
    return the final external memory.  The tokens make the concurrent core compute the
    same bytes; this is the reference the interpreter is checked against."""
    from golden.core_ops import execute
    cfg = cfg or image.program.config
    dram = bytearray(image.dram)
    abuf, wbuf, tbuf = bytearray(cfg.abuf_bytes), bytearray(cfg.wbuf_bytes), bytearray(4 * cfg.tbuf_words)
    lay = cfg.slot
    for ins in image.program.instrs:
        a = ins.args
        if ins.op == Op.LOAD:
            space, mode = ins.sub & 3, ins.sub >> 2
            buf = (abuf, wbuf, tbuf)[space]
            for r in range(a["rows"]):
                src = a["dram_addr"] + r * a["dram_stride"]
                data = dram[src:src + a["row_bytes"]]
                if mode == LoadMode.LANES:
                    e = lay.entry_bytes
                    for j in range(len(data) // e):
                        at = a["sram_addr"] + (j * cfg.outputs + r) * e
                        buf[at:at + e] = data[j * e:(j + 1) * e]
                else:
                    at = a["sram_addr"] + r * a["sram_stride"]
                    buf[at:at + len(data)] = data
        elif ins.op == Op.STORE:
            for r in range(a["rows"]):
                src = a["sram_addr"] + r * a["sram_stride"]
                dst = a["dram_addr"] + r * a["dram_stride"]
                n = a["row_bytes"]
                if ins.sub == StoreMode.PACK:
                    per = 8 // cfg.bw
                    el = torch.frombuffer(bytearray(abuf[src:src + 2 * n * per]), dtype=torch.int16).long()
                    el = (el & ((1 << cfg.bw) - 1)).view(n, per)
                    packed = sum(el[:, q] << (cfg.bw * q) for q in range(per))
                    dram[dst:dst + n] = bytes(packed.tolist())
                else:
                    dram[dst:dst + n] = abuf[src:src + n]
        elif ins.op == Op.END:
            break
        else:
            execute(cfg, ins, abuf, wbuf, tbuf)
    return dram
