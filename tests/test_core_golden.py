"""The core's golden side: ISA encoding, the compute instructions' faults, the compiler's
tokens, and a compiled sentence run in program order against the integer model."""

import random

import pytest
import torch

from base.config import CoreConfig
from base.isa import (FIELDS, INSTR_BYTES, CoreFault, Error, Instr, KllmIsaError, Op, RowKind,
                      affine_words, decode, decode_program, encode, encode_program, format_words)
from golden import core_ops
from golden.compiler import PAIRS, compile_sentence, run_in_order


# ------------------------------------------------------------------ encoding

@pytest.mark.parametrize("op", sorted(FIELDS))
def test_encode_decode_round_trip(op):
    rng = random.Random(op)
    for _ in range(50):
        args = {name: rng.randrange(1 << bits) for name, _, _, bits in FIELDS[op]}
        i = Instr(op, rng.randrange(256), rng.randrange(256), rng.randrange(256), args)
        data = encode(i)
        assert len(data) == INSTR_BYTES
        back = decode(data)
        assert (back.op, back.wait, back.signal, back.sub, back.args) == \
            (i.op, i.wait, i.signal, i.sub, i.args)


def test_fields_do_not_overlap():
    for op, fields in FIELDS.items():
        used = {}
        for name, word, lo, bits in fields:
            for b in range(lo, lo + bits):
                assert (word, b) not in used, f"{op}: {name} overlaps {used[(word, b)]}"
                used[(word, b)] = name
            assert 1 <= word < 8 and lo + bits <= 32


def test_encode_refuses_bad_fields():
    with pytest.raises(KllmIsaError, match="rows"):
        encode(Instr(Op.LOAD, args={"rows": 1 << 16}))
    with pytest.raises(KllmIsaError, match="no field"):
        encode(Instr(Op.END, args={"rows": 1}))
    with pytest.raises(KllmIsaError, match="unknown opcode"):
        encode(Instr(0x7F))
    with pytest.raises(KllmIsaError, match="wait"):
        encode(Instr(Op.END, wait=256))
    with pytest.raises(KllmIsaError, match="whole number"):
        decode_program(b"\0" * 33)


def test_unknown_opcode_decodes_without_fields():
    raw = bytearray(INSTR_BYTES)
    raw[0] = 0x7F
    assert decode(bytes(raw)).op == 0x7F and decode(bytes(raw)).args == {}


# ------------------------------------------------------------ compute faults

def _buffers(cfg):
    return bytearray(cfg.abuf_bytes), bytearray(cfg.wbuf_bytes), bytearray(4 * cfg.tbuf_words)


def _put_words(tbuf, addr, words):
    for k, w in enumerate(words):
        tbuf[4 * (addr + k):4 * (addr + k) + 4] = (w & 0xFFFFFFFF).to_bytes(4, "little")


@pytest.fixture
def small():
    cfg = CoreConfig(abuf_kb=4, tbuf_kb=4, k_max=64, max_row=64, max_tokens=16)
    abuf, wbuf, tbuf = _buffers(cfg)
    th = list(range(-7, 8))
    _put_words(tbuf, 0, format_words(4, 0, th, list(range(-8, 8))))
    return cfg, abuf, wbuf, tbuf


def _mm(**kw):
    args = dict(x_addr=0, x_stride=128, tokens=2, k=32, lanes=4, outliers=0, fmt=0, y_addr=1024,
                y_tstride=32, y_nstride=2)
    args.update(kw)
    return Instr(Op.MATMUL, args=args)


@pytest.mark.parametrize("change, code", [
    (dict(k=65), Error.OVERFLOW),
    (dict(lanes=17), Error.OVERFLOW),
    (dict(outliers=9), Error.OVERFLOW),
    (dict(x_addr=4096 - 64), Error.BAD_ADDRESS),
    (dict(y_addr=4095), Error.BAD_ADDRESS),
    (dict(fmt=1020), Error.BAD_ADDRESS),
])
def test_matmul_faults(small, change, code):
    cfg, abuf, wbuf, tbuf = small
    _put_words(tbuf, 1020, [4])              # a format whose thresholds run past TBUF's end
    core_ops.execute(cfg, _mm(), abuf, wbuf, tbuf)           # the unchanged one runs
    with pytest.raises(CoreFault) as e:
        core_ops.execute(cfg, _mm(**change), abuf, wbuf, tbuf)
    assert e.value.code == code


def test_matmul_bad_slot_and_format(small):
    cfg, abuf, wbuf, tbuf = small
    i = _mm()
    i.sub = cfg.slots
    with pytest.raises(CoreFault) as e:
        core_ops.execute(cfg, i, abuf, wbuf, tbuf)
    assert e.value.code == Error.BAD_ADDRESS
    _put_words(tbuf, 100, [cfg.ba + 1])                       # more index bits than the IMU's
    with pytest.raises(CoreFault) as e:
        core_ops.execute(cfg, _mm(fmt=100), abuf, wbuf, tbuf)
    assert e.value.code == Error.OVERFLOW


def test_rowop_and_add_faults(small):
    cfg, abuf, wbuf, tbuf = small
    lut = Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(src=0, src_stride=64, rows=2, length=32,
                                                     fmt=0, table=40, dst=512, dst_stride=64))
    core_ops.execute(cfg, lut, abuf, wbuf, tbuf)
    for change, code in ((dict(length=65), Error.OVERFLOW), (dict(dst=4096 - 32), Error.BAD_ADDRESS),
                         (dict(src=1), Error.BAD_ADDRESS)):
        bad = Instr(Op.ROWOP, sub=RowKind.LUT, args={**lut.args, **change})
        with pytest.raises(CoreFault) as e:
            core_ops.execute(cfg, bad, abuf, wbuf, tbuf)
        assert e.value.code == code
    with pytest.raises(CoreFault) as e:
        core_ops.execute(cfg, Instr(Op.ROWOP, sub=7, args=lut.args), abuf, wbuf, tbuf)
    assert e.value.code == Error.BAD_OPCODE
    add = Instr(Op.ADD, args=dict(a=0, b=0, rows=1, length=64, stride=128, params=900, dst=0))
    with pytest.raises(CoreFault) as e:                       # 1 + 3 * 64 words from 900 > 1024
        core_ops.execute(cfg, add, abuf, wbuf, tbuf)
    assert e.value.code == Error.BAD_ADDRESS


def test_add_semantics(small):
    cfg, abuf, wbuf, tbuf = small
    a = torch.tensor([100, -5, 32767, 7], dtype=torch.int16)
    b = torch.tensor([3, 3, 1000, -9], dtype=torch.int16)
    abuf[0:8], abuf[8:16] = a.numpy().tobytes(), b.numpy().tobytes()
    _put_words(tbuf, 200, affine_words([3, -3, 5, 1], [4, 0, 0, -(1 << 40)], 2))
    core_ops.execute(cfg, Instr(Op.ADD, args=dict(a=0, b=8, rows=1, length=4, stride=16,
                                                  params=200, dst=16)), abuf, wbuf, tbuf)
    out = torch.frombuffer(bytearray(abuf[16:24]), dtype=torch.int16).tolist()
    # 100 + (9 + 4 + 2) >> 2; -5 + (-9 + 2) >> 2; saturated; 7 + (-9 - 2**40 + 2) >> 2 saturated
    assert out == [103, -7, 32767, -32768]


# ------------------------------------------------------------ compiled programs

def test_tokens_pair_up(core_image):
    """Per semaphore, every prefix of the program has waits <= signals in program order of
    each engine pair, and at the end they are equal (no token left, none missing)."""
    signals = {s: 0 for s in PAIRS.values()}
    waits = dict(signals)
    for ins in core_image.program.instrs:
        for s in signals:
            if ins.wait >> s & 1:
                waits[s] += 1
            if ins.signal >> s & 1:
                signals[s] += 1
    assert waits == signals
    assert sum(waits.values()) > 20


def test_program_bytes_decode(core_image):
    n = len(core_image.program.instrs)
    raw = bytes(core_image.dram[:n * INSTR_BYTES])
    assert encode_program(decode_program(raw)) == raw
    assert [i.op for i in decode_program(raw)] == [i.op for i in core_image.program.instrs]


def test_compiled_layer_equals_integer_model(core_model, core_image, core_sentence):
    out = core_image.output(run_in_order(core_image))
    ref = core_model.forward(core_sentence, 1)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)
    assert out.abs().max() > 1000          # a real hidden state, not zeros


def test_a_flipped_weight_changes_the_output(core_image, core_model, core_sentence):
    """The equality above can fail: one weight tile's codebook byte changed in memory."""
    lo, n = core_image.regions["w.layer0.ffn_out.0.tail"]
    dram = bytearray(core_image.dram)
    dram[lo] ^= 0x40
    image = type(core_image)(**{**core_image.__dict__, "dram": dram})
    out = image.output(run_in_order(image))
    assert not torch.equal(out, core_model.forward(core_sentence, 1))


def test_compiler_refuses_what_does_not_fit(core_model, core_sentence):
    from base.errors import KllmError
    with pytest.raises(KllmError, match="activation buffer"):
        compile_sentence(core_model, core_sentence, CoreConfig(abuf_kb=32), layers=1)
    with pytest.raises(KllmError, match="tokens"):
        compile_sentence(core_model, core_sentence, CoreConfig(max_tokens=4), layers=1)
    with pytest.raises(KllmError, match="outliers"):
        compile_sentence(core_model, core_sentence, CoreConfig(outliers=2), layers=1)
    with pytest.raises(KllmError, match="layers"):
        compile_sentence(core_model, core_sentence, layers=3)


def test_interpreter_runs_the_layer_with_loads_under_compute(core_image, core_model, core_sentence):
    """The concurrent model (tokens, queues, one read channel) computes the program-order
    bytes, and the weight loads overlap the compute engine's work."""
    from golden.interp import Interpreter
    r = Interpreter(core_image.program.config).run(bytearray(core_image.dram),
                                                   core_image.prog_addr, max_cycles=5_000_000)
    assert r.error == 0, r.message
    assert r.dram == run_in_order(core_image)
    assert torch.equal(core_image.output(r.dram), core_model.forward(core_sentence, 1))
    assert r.busy["compute"] > 0.85 * r.cycles
    busy = bytearray(r.cycles + 1)
    for k, eng, s, e in r.trace:
        if eng == "compute":
            busy[s:e + 1] = b"\1" * (e + 1 - s)
    load_cycles = [t for k, eng, s, e in r.trace if eng == "load" for t in range(s, e + 1)]
    overlap = sum(busy[t] for t in load_cycles) / len(load_cycles)
    assert overlap > 0.8, f"only {overlap:.0%} of the load engine's cycles under compute"


def test_run_reports_an_exact_layer(core_model, monkeypatch, tmp_path):
    """``kllm run``'s flow on the interpreter (the fitted model stubbed by the fixture's):
    the output is the integer model's, the table adds up, the cosine is a real one."""
    import golden.intmodel
    from base.config import CoreConfig
    from kllm.run import run_sentence
    monkeypatch.setattr(golden.intmodel, "cached_build", lambda *a, **k: core_model)
    r = run_sentence("Return the number of items.", layers=1, engine="model",
                     config=CoreConfig(), calibration=8, cache_dir=tmp_path, out_dir=tmp_path)
    assert r["equals_integer_model"]
    assert 0.8 < r["cosine_to_fp32"] < 1.0
    units = {u["unit"]: u for u in r["units"]}
    assert units["IMU (quantizer, Orizuru, requant)"]["instructions"] == r["instruction_counts"]["MATMUL"]
    assert sum(u["busy_cycles"] for u in r["units"] if not u["unit"].startswith("DMA")) <= r["cycles"]
    assert 0 < r["imu_mac_utilization"] < 1
    assert (tmp_path / "run.json").exists() and (tmp_path / "program.txt").exists()
