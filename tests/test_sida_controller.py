"""The SiDA controller and its baselines in the cycle model: invariants and hand-checked cases."""

import pytest
import torch

from golden.sida import (BufferError, CycleModel, RecordingBuffer, TraceBatch, WeightBuffer,
                         imu_cycles,
                         make_trace, simulate)

# No shift and no outliers keep the hand arithmetic short: a token's tail is then
# 2**bw + 1 = 17 operations per tile (one empty outlier beat).
CM = CycleModel(lanes=16, elems=4, shift=0, outlier_beats=0, bandwidth=8.0, hidden=384,
                neurons=96, experts=16, expert_bytes=45888)


def batch(*layers, pred=None):
    """A one-token-per-row trace batch: each layer a list of per-token expert lists."""
    t = [torch.tensor(x) for x in layers]
    p = None if pred is None else [torch.tensor(x) for x in pred]
    return TraceBatch(len(layers[0]), t, p)


def random_trace(seed, batches=12, layers=3, tokens=5, k=2, E=16, wrong=0.3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        true = [torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(tokens)])
                for _ in range(layers)]
        pred = []
        for tl in true:
            p = tl.clone()
            flip = torch.rand(p.shape, generator=g) < wrong
            p[flip] = torch.randint(0, E, (int(flip.sum()),), generator=g)
            pred.append(p)
        out.append(TraceBatch(tokens, true, pred))
    return out


def test_imu_cycle_formula():
    """By hand from the IMU's stated rules (docs/ARCHITECTURE.md): latency 10 + log2 P = 12,
    tail 17, streaming when B >= max(17, min_beats = 2**bw + 4 = 20); per tile the host writes
    16 lanes x ceil(K/4) index rows + 16 x 16 centroids + 16 activation centroids."""
    kw = dict(lanes=16, elems=4, shift=0, outlier_beats=0)
    # 6 tiles of 16 x 384: writes 16*96 + 272 = 1808, stream 96 + 12 + 17 - 1 = 124
    assert imu_cycles(96, 384, 1, **kw) == 6 * (1808 + 124)
    # 24 tiles of 16 x 96, 3 tokens of B = 24 >= 20: writes 656, stream 3*24 + 28
    assert imu_cycles(384, 96, 3, **kw) == 24 * (656 + 100)
    # B = 2 does not stream: results one tail (17 cycles) apart: 29, 46, and the third vector
    # waits for the first one's bank (read at cycle 21): starts at 22, tail at 40, result 63
    assert imu_cycles(16, 8, 2, **kw) == 304 + 47
    assert imu_cycles(16, 8, 3, **kw) == 304 + 64
    # a shift and outliers add to the tail: 16 + 2 + 5 = 23; B = 24 still streams
    assert imu_cycles(16, 96, 1, lanes=16, elems=4, shift=2, outlier_beats=5) == 656 + 24 + 12 + 22
    assert imu_cycles(96, 384, 0, **kw) == 0
    assert CM.load() == 5736


def test_lru_single_miss_by_hand():
    # dense: 4 x 24 tiles x 1932 + router (1 tile, 1932) = 187404; load 45888 / 8 = 5736;
    # expert: 6 x 1932 + 24 x (656 + 24 + 28) = 28584
    r = simulate([batch([[3]])], "lru", 1, CM)
    assert (r.cycles, r.stall, r.compute, r.loads, r.bytes) == (221724, 5736, 215988, 1, 45888)
    assert r.hit_rate == 0.0


@pytest.mark.parametrize("policy", ["lru", "oracle", "sida", "sida-hash"])
@pytest.mark.parametrize("capacity", [2, 3, 8])
def test_never_exceeds_capacity_and_slots_are_not_overwritten_in_use(policy, capacity):
    trace = random_trace(capacity)
    buf = WeightBuffer(capacity)
    r = simulate(trace, policy, capacity, CM, buffer=buf, log=True)
    assert len(buf.resident) <= capacity and buf.loads == r.loads
    assert r.cycles == r.compute + r.stall
    # per slot: a load starts only after every use of the slot's previous expert ended,
    # and a use starts only after its expert's load ended
    busy_until = {}
    loaded = {}
    for ev in r.events:
        if ev[0] == "load":
            _, slot, key, start, end, old = ev
            assert start >= busy_until.get(slot, 0), ev
            assert 0 <= slot < capacity
            loaded[slot] = (key, end)
            busy_until[slot] = end
        elif ev[0] == "use":
            _, slot, key, start, end = ev
            assert loaded[slot][0] == key and start >= loaded[slot][1], ev
            busy_until[slot] = max(busy_until[slot], end)
    uses = [e for e in r.events if e[0] == "use"]
    assert all(b[3] >= a[4] for a, b in zip(uses, uses[1:]))        # one IMU, in order


def test_lru_evicts_least_recently_used():
    # one layer, capacity 3: experts 0, 1, 0 (hit), 2, 3 (evicts 1), 0 (hit), 1 (miss)
    seq = [0, 1, 0, 2, 3, 0, 1]
    r = simulate([batch([[e]]) for e in seq], "lru", 3, CM, log=True)
    loads = [(ev[2][1], ev[5]) for ev in r.events if ev[0] == "load"]
    assert loads == [(0, None), (1, None), (2, None), (3, (0, 1)), (1, (0, 2))]
    assert r.hits == 2 and r.uses == 7


def test_oracle_never_misses_and_prefetches():
    trace = random_trace(5)
    o = simulate(trace, "oracle", 4, CM)
    lru = simulate(trace, "lru", 4, CM)
    assert o.hit_rate == 1.0 and o.wasted == 0
    assert o.stall < lru.stall


def test_sida_with_perfect_prediction_is_the_oracle():
    trace = random_trace(6, wrong=0.0)
    s, o = simulate(trace, "sida", 4, CM), simulate(trace, "oracle", 4, CM)
    assert (s.cycles, s.stall, s.loads, s.wasted) == (o.cycles, o.stall, o.loads, 0)


def test_sida_wrong_prediction_costs_bandwidth_and_a_demand_miss():
    # predicted 5 but the token uses 7: 5 is loaded ahead (wasted), 7 fetched on demand
    r = simulate([batch([[7]], pred=[[5]])], "sida", 2, CM, log=True)
    loads = [ev[2][1] for ev in r.events if ev[0] == "load"]
    assert loads == [5, 7] and r.wasted == 1 and r.hits == 0 and r.uses == 1
    # the miss waits for the router, then for the load engine behind the wasted load
    use = [ev for ev in r.events if ev[0] == "use"][0]
    assert use[3] == max(187404, 5736) + 5736      # router at 187404 (dense, 1 token)


def test_hash_routed_uses_the_prediction_and_no_router():
    r = simulate([batch([[7]], pred=[[5]])], "sida-hash", 2, CM, log=True)
    assert [ev[2][1] for ev in r.events if ev[0] == "use"] == [5]
    assert r.hit_rate == 1.0 and r.loads == 1
    assert r.compute == 4 * 24 * 1932 + 28584                          # no router cycles


def test_resident_has_no_stalls_and_needs_every_slot():
    trace = random_trace(7, layers=2)
    r = simulate(trace, "resident", 32, CM)
    assert r.stall == 0 and r.loads == 0 and r.fill_bytes == 32 * 45888
    with pytest.raises(BufferError, match="all-resident needs 32 expert slots .* buffer has 31"):
        simulate(trace, "resident", 31, CM)


def test_too_small_buffer_is_refused_and_nothing_is_loaded():
    buf = WeightBuffer(1)
    with pytest.raises(BufferError, match="buffer of 1 expert.* too small for prefetching"):
        simulate(random_trace(8), "sida", 1, CM, buffer=buf)
    assert buf.resident == set() and buf.loads == 0


def test_weight_buffer_errors_and_atomic_load_set():
    buf = WeightBuffer(2)
    buf.load("a")
    with pytest.raises(BufferError, match="too small: 2 expert\\(s\\) to load, 1 free of 2; "
                       "nothing loaded"):
        buf.load_set({"b": None, "c": None})
    assert buf.resident == {"a"} and buf.loads == 1
    with pytest.raises(BufferError, match="already resident"):
        buf.load("a")
    buf.load("b")
    with pytest.raises(BufferError, match="weight buffer full"):
        buf.load("c")
    with pytest.raises(BufferError, match="expert c is not resident"):
        buf.evict("c")
    buf.evict("a")
    assert buf.slot_of("c") is None and buf.load("c") == 0           # the freed slot
    with pytest.raises(BufferError, match="capacity must be a positive"):
        WeightBuffer(0)


def test_make_trace_groups_sentences():
    s1 = torch.zeros(2, 3, 1, dtype=torch.long)
    s2 = torch.ones(2, 4, 1, dtype=torch.long)
    tr = make_trace([s1, s2, s1], batch=2)
    assert [b.tokens for b in tr] == [7, 3]
    assert tr[0].true[1].flatten().tolist() == [0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="batch must be at least 1"):
        make_trace([s1], batch=0)


def test_cycle_model_rejects_bad_parameters():
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        CycleModel(bandwidth=0, expert_bytes=1)
    with pytest.raises(ValueError, match="lanes must be a positive integer"):
        CycleModel(lanes=0, expert_bytes=1)
    with pytest.raises(ValueError, match="imu: parameter 'elems'"):
        CycleModel(elems=3, expert_bytes=1)
    with pytest.raises(ValueError, match="shift must be in 0..8"):
        CycleModel(shift=9, expert_bytes=1)
    with pytest.raises(ValueError, match="outlier_beats must be at most the IMU's outlier capacity 16"):
        CycleModel(outlier_beats=17, expert_bytes=1)
    with pytest.raises(ValueError, match="unknown policy 'fifo'"):
        simulate(random_trace(1), "fifo", 4, CM)


def test_oracle_gains_from_a_larger_buffer():
    # a regression: with a larger buffer the oracle must not stall more (it once kept
    # experts the batch no longer needed and starved its prefetch ring)
    trace = random_trace(0, batches=6, layers=6, tokens=21, k=4, wrong=0.0)
    stalls = [simulate(trace, "oracle", c, CM).stall for c in (4, 8, 16, 48)]
    assert stalls == sorted(stalls, reverse=True)
    assert stalls[0] < simulate(trace, "lru", 4, CM).stall


@pytest.mark.parametrize("policy", ["lru", "sida", "resident"])
def test_driver_receives_each_experts_weights(policy):
    trace = random_trace(9, layers=2)
    buf = RecordingBuffer(32 if policy == "resident" else 3)
    r = simulate(trace, policy, buf.capacity, CM, buffer=buf,
                 weights=lambda key: ("weights of", key))
    assert len(buf.history) == (32 if policy == "resident" else r.loads)
    assert all(w == ("weights of", key) for _, key, w in buf.history)
    assert buf.bytes_written == len(buf.history) * CM.expert_bytes


def test_expert_compute_is_the_expert_steps():
    # one layer, three tokens: expert 3 takes two, expert 5 one
    r = simulate([batch([[3], [3], [5]])], "lru", 2, CM)
    two = 6 * (1808 + 2 * 96 + 28) + 24 * (656 + 2 * 24 + 28)     # 29736
    one = 6 * (1808 + 96 + 28) + 24 * (656 + 24 + 28)             # 28584
    dense = 4 * 24 * (1808 + 3 * 96 + 28) + (1808 + 3 * 96 + 28)  # 206028
    assert (r.expert_compute, r.compute) == (two + one, dense + two + one)
    assert r.row(CM)["stall_expert_share"] == r.stall / (two + one)
