"""The simulated engine: latencies from the roofline, steady state, overload, KV admission."""

from __future__ import annotations

import pytest

from controlplane.catalog import Dtype, Workload, load_catalog, predict
from controlplane.catalog.perf import EngineProfile
from controlplane.executor.simengine import SimEngine, SimRequest

CATALOG = load_catalog()
QWEN7, H100 = CATALOG.model("qwen2.5-7b-instruct"), CATALOG.accelerator("H100")
PROFILE = EngineProfile.of(QWEN7, H100, 1, Dtype.BF16)
WORKLOAD = Workload(1024, 256, 1.0, 0.05)


def drive(engine: SimEngine, rate: float, seconds: float, tin: int = 1024, tout: int = 256) -> None:
    for i in range(int(rate * seconds)):
        engine.submit(SimRequest(f"r{i}", tin, tout, i / rate))
    engine.advance(seconds)


def test_single_request_latencies_follow_the_roofline() -> None:
    engine = SimEngine(PROFILE)
    engine.submit(SimRequest("a", 512, 4, 0.0))
    engine.advance(10)
    [done] = engine.finished
    assert done.ttft_s == pytest.approx(PROFILE.step_time(0, 0.0, 512))
    assert done.tpot_s == pytest.approx(PROFILE.step_time(1, 512 + 2), rel=0.01)
    assert done.finish_s is not None and done.finish_s < 1


def test_steady_state_below_capacity_meets_the_slo() -> None:
    prediction = predict(QWEN7, H100, 1, Dtype.BF16, WORKLOAD)
    engine = SimEngine(PROFILE, max_batch=prediction.batch)
    offered = 0.8 * prediction.output_tokens_per_s
    drive(engine, offered / 256, 120)
    metrics = engine.metrics(60)
    assert metrics.waiting == 0
    assert metrics.output_tokens_per_s == pytest.approx(offered, rel=0.05)
    assert metrics.tpot_p95_s <= WORKLOAD.tpot_p95_s
    assert metrics.ttft_p95_s <= WORKLOAD.ttft_p95_s
    assert 0 < metrics.kv_usage <= 1


def test_at_predicted_capacity_the_engine_keeps_up_in_the_memory_bound_case() -> None:
    prediction = predict(QWEN7, H100, 1, Dtype.BF16, WORKLOAD)
    engine = SimEngine(PROFILE, max_batch=prediction.batch)
    drive(engine, prediction.output_tokens_per_s / 256, 120)
    metrics = engine.metrics(60)
    assert metrics.output_tokens_per_s == pytest.approx(prediction.output_tokens_per_s, rel=0.05)
    assert metrics.tpot_p50_s == pytest.approx(prediction.tpot_s, rel=0.05)


def test_overload_builds_a_queue_and_ttft_grows() -> None:
    prediction = predict(QWEN7, H100, 1, Dtype.BF16, WORKLOAD)
    engine = SimEngine(PROFILE, max_batch=prediction.batch)
    drive(engine, 2 * prediction.output_tokens_per_s / 256, 60)
    metrics = engine.metrics(30)
    assert metrics.waiting > 100
    assert metrics.ttft_p95_s > 5 * WORKLOAD.ttft_p95_s
    assert metrics.output_tokens_per_s < 1.2 * prediction.output_tokens_per_s


def test_kv_cache_bounds_admission() -> None:
    small = EngineProfile.of(QWEN7, H100, 1, Dtype.BF16)
    engine = SimEngine(small)
    big = small.kv_capacity_tokens // 3
    for i in range(5):
        engine.submit(SimRequest(f"r{i}", big - 10, 10, 0.0))
    engine.step()
    assert len(engine.running) == 3 and len(engine.waiting) == 2
    assert engine.kv_used_tokens <= small.kv_capacity_tokens


def test_speed_factor_and_bad_requests() -> None:
    slow, fast = SimEngine(PROFILE), SimEngine(PROFILE, speed=2.0)
    for engine in (slow, fast):
        engine.submit(SimRequest("a", 128, 64, 0.0))
        engine.advance(10)
    assert fast.finished[0].finish_s == pytest.approx(slow.finished[0].finish_s / 2)  # type: ignore[operator]
    engine = SimEngine(PROFILE)
    with pytest.raises(ValueError, match="at least 1"):
        engine.submit(SimRequest("z", 0, 5, 0.0))
    with pytest.raises(ValueError, match="KV cache"):
        engine.submit(SimRequest("huge", PROFILE.kv_capacity_tokens, 10, 0.0))
    engine.submit(SimRequest("b", 10, 10, 5.0))
    with pytest.raises(ValueError, match="arrival order"):
        engine.submit(SimRequest("c", 10, 10, 1.0))
