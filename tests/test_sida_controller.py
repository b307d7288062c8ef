"""The SiDA controller and its baselines in the cycle model: invariants and hand-checked cases."""

import pytest
import torch

from base.config import ImuConfig

from golden.sida import (BufferError, CycleModel, RecordingBuffer, TraceBatch, WeightBuffer,
                         imu_cycles,
                         make_trace, simulate)

# No shift and no outliers keep the hand arithmetic short: a token's tail is then
# 2**bw + 1 = 17 operations per tile (one empty outlier beat).
CM = CycleModel(imu=ImuConfig(outputs=16, elems=4), shift=0, outlier_beats=0, bandwidth=8.0, hidden=384,
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


# The IMU's constants from its configuration (they move when the RTL is re-pipelined); the
# arithmetic below is done by hand from the rules in docs/ARCHITECTURE.md.
_IMU = ImuConfig(outputs=16, elems=4)
LAT = _IMU.latency                     # 15 at P = 4
D = _IMU.min_beats - 16 + 1            # tail start after a vector's last beat (6)
T0 = 17                                # tail: 2**bw + no shift + one empty outlier beat
assert _IMU.min_beats <= 24            # the 96-column tiles below stream
W384, W96 = 16 * 96 + 272, 16 * 24 + 272   # host writes of a 384- / 96-column tile


def tile(beats, tokens):
    """A streaming tile: writes + n B + latency + T - 1."""
    return (W384 if beats == 96 else W96) + tokens * beats + LAT + T0 - 1


def test_imu_cycle_formula():
    """By hand from the IMU's stated rules: streaming when B >= max(17, min_beats); per tile
    the host writes 16 outputs x ceil(K/4) index rows + 16 x 16 centroids + 16 activation
    centroids."""
    kw = dict(imu=_IMU, shift=0, outlier_beats=0)
    assert imu_cycles(96, 384, 1, **kw) == 6 * tile(96, 1)
    assert imu_cycles(384, 96, 3, **kw) == 24 * tile(24, 3)
    # B = 2 does not stream: vector 0 ends at cycle 1, its tail starts at 1 + D and its result
    # leaves 16 + LAT - D cycles later; vector 1's tail waits for vector 0's (17 cycles)
    r0 = 1 + D + 16 + LAT - D
    assert imu_cycles(16, 8, 2, **kw) == 304 + (r0 + 17) + 1
    # the third vector waits for the first one's bank: read at 1 + D + 15, so it starts one
    # cycle later, ends at 1 + D + 17, its tail starts after vector 1's (1 + D + 34) or D later
    c2 = max(1 + D + 17 + D, 1 + D + 34)
    assert imu_cycles(16, 8, 3, **kw) == 304 + c2 + 16 + LAT - D + 1
    # a shift and outliers add to the tail: 16 + 2 + 5 = 23; B = 24 still streams
    assert imu_cycles(16, 96, 1, imu=_IMU, shift=2, outlier_beats=5) == \
        W96 + 24 + LAT + 22
    assert imu_cycles(96, 384, 0, **kw) == 0
    assert CM.load() == 5736


DENSE1 = 4 * 24 * tile(96, 1) + tile(96, 1)           # 4 d x d linears + the router, 1 token
EXPERT1 = 6 * tile(96, 1) + 24 * tile(24, 1)


def test_lru_single_miss_by_hand():
    # dense then the router; the load (45888 / 8 = 5736 cycles) starts after the router
    r = simulate([batch([[3]])], "lru", 1, CM)
    assert (r.cycles, r.stall, r.compute, r.loads, r.bytes) == \
        (DENSE1 + 5736 + EXPERT1, 5736, DENSE1 + EXPERT1, 1, 45888)
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
    assert use[3] == max(DENSE1, 5736) + 5736      # the router ends the dense step


def test_hash_routed_uses_the_prediction_and_no_router():
    r = simulate([batch([[7]], pred=[[5]])], "sida-hash", 2, CM, log=True)
    assert [ev[2][1] for ev in r.events if ev[0] == "use"] == [5]
    assert r.hit_rate == 1.0 and r.loads == 1
    assert r.compute == DENSE1 - tile(96, 1) + EXPERT1                 # no router cycles


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
    with pytest.raises(TypeError, match="cycle model: imu must be an ImuConfig"):
        CycleModel(imu={"outputs": 16}, expert_bytes=1)
    with pytest.raises(ValueError, match="neurons must be a positive integer"):
        CycleModel(neurons=0, expert_bytes=1)
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
    two = 6 * tile(96, 2) + 24 * tile(24, 2)
    one = EXPERT1
    dense = 4 * 24 * tile(96, 3) + tile(96, 3)
    assert (r.expert_compute, r.compute) == (two + one, dense + two + one)
    assert r.row(CM)["stall_expert_share"] == r.stall / (two + one)
