"""Performance model: fit limits, known ratios, monotonicity, SLO reasons, calibration."""

from __future__ import annotations

import pytest

from controlplane.catalog import (
    Calibration,
    Dtype,
    PerfAssumptions,
    Workload,
    load_catalog,
    predict,
    smallest_feasible_tp,
)

CATALOG = load_catalog()
QWEN7 = CATALOG.model("qwen2.5-7b-instruct")
QWEN72 = CATALOG.model("qwen2.5-72b-instruct")
DEEPSEEK = CATALOG.model("deepseek-v3")
H100, A100, H20 = (CATALOG.accelerator(n) for n in ("H100", "A100", "H20"))
LOOSE = Workload(input_tokens=512, output_tokens=256, ttft_p95_s=5.0, tpot_p95_s=0.2)
PURE = PerfAssumptions(step_overhead_s=0.0, tp_comm_penalty=0.0)


def test_fit_limits_match_known_deployments() -> None:
    assert smallest_feasible_tp(QWEN7, H100, Dtype.BF16, Workload()).tp == 1
    big = smallest_feasible_tp(QWEN72, H100, Dtype.BF16, Workload())
    assert big.feasible and big.tp >= 2  # 145 GB of bf16 weights never fit one 80 GB device
    assert not predict(QWEN72, H100, 1, Dtype.BF16, Workload()).feasible
    # DeepSeek-V3 in FP8 (~625 GiB) does not fit one 8 x H100 80 GB node, but fits 8 x H20 96 GB
    assert not smallest_feasible_tp(DEEPSEEK, H100, Dtype.FP8, LOOSE).feasible
    assert "weights need" in smallest_feasible_tp(DEEPSEEK, H100, Dtype.FP8, LOOSE).reason
    assert smallest_feasible_tp(DEEPSEEK, H20, Dtype.FP8, LOOSE).tp == 8


def test_known_ratios() -> None:
    tiny = Workload(input_tokens=16, output_tokens=16, ttft_p95_s=10, tpot_p95_s=10)
    batch_one = PerfAssumptions(step_overhead_s=0.0, tp_comm_penalty=0.0, max_batch=1)
    h100 = predict(QWEN7, H100, 1, Dtype.BF16, tiny, batch_one)
    a100 = predict(QWEN7, A100, 1, Dtype.BF16, tiny, batch_one)
    assert h100.batch == a100.batch == 1
    # batch-1 decode is bandwidth bound: tokens/s scale with memory bandwidth (3.35 vs 2.04 TB/s)
    assert h100.decode_tokens_per_s / a100.decode_tokens_per_s == pytest.approx(3.35 / 2.04, rel=1e-6)
    # and equal bandwidth x efficiency / bytes streamed per token
    streamed = QWEN7.active_weight_bytes(Dtype.BF16) + QWEN7.kv_bytes_per_token * (16 + 8)
    assert h100.decode_tokens_per_s == pytest.approx(H100.bandwidth_bytes_s * 0.75 / streamed, rel=1e-6)
    # prefill is compute bound: tokens/s scale with dense TFLOPS (989 vs 312)
    assert h100.prefill_tokens_per_s / a100.prefill_tokens_per_s == pytest.approx(989 / 312, rel=1e-6)
    # fp8 weights halve the bytes per decode step, so batch-1 decode on H100 nearly doubles
    fp8 = predict(QWEN7, H100, 1, Dtype.FP8, tiny, batch_one)
    assert 1.9 < fp8.decode_tokens_per_s / h100.decode_tokens_per_s < 2.0


def test_monotonic_in_slo_bandwidth_and_lengths() -> None:
    loose = predict(QWEN7, H100, 1, Dtype.BF16, Workload(tpot_p95_s=0.05))
    tight = predict(QWEN7, H100, 1, Dtype.BF16, Workload(tpot_p95_s=0.012))
    assert tight.feasible and loose.feasible
    assert tight.batch <= loose.batch and tight.output_tokens_per_s <= loose.output_tokens_per_s
    assert tight.tpot_s <= 0.012
    short = predict(QWEN7, A100, 1, Dtype.BF16, Workload(input_tokens=256))
    long = predict(QWEN7, A100, 1, Dtype.BF16, Workload(input_tokens=4096))
    assert long.output_tokens_per_s < short.output_tokens_per_s
    assert (
        predict(QWEN7, H100, 1, Dtype.BF16, Workload()).decode_tokens_per_s
        > predict(QWEN7, A100, 1, Dtype.BF16, Workload()).decode_tokens_per_s
    )
    previous = 0.0
    for tp in (2, 4, 8):  # a bigger TP group holds more KV and streams faster: capacity grows
        p = predict(QWEN72, A100, tp, Dtype.BF16, Workload())
        if p.feasible:
            assert p.output_tokens_per_s >= previous
            previous = p.output_tokens_per_s
    assert previous > 0


@pytest.mark.parametrize(
    ("tp", "dtype", "workload", "fragment"),
    [
        (3, Dtype.BF16, Workload(), "does not divide"),
        (1, Dtype.FP8, Workload(), "does not support fp8"),  # on A100
        (1, Dtype.BF16, Workload(tpot_p95_s=0.001), "over the TPOT target"),
        (1, Dtype.BF16, Workload(input_tokens=30000, ttft_p95_s=0.05), "over 50% of the TTFT target"),
        (1, Dtype.BF16, Workload(input_tokens=2_000_000), "less than one"),
    ],
)
def test_infeasible_predictions_say_why(tp: int, dtype: Dtype, workload: Workload, fragment: str) -> None:
    prediction = predict(QWEN7, A100, tp, dtype, workload)
    assert not prediction.feasible
    assert fragment in prediction.reason


def test_cost_per_token_orders_types() -> None:
    workload = Workload()
    costs = {
        a: smallest_feasible_tp(QWEN7, CATALOG.accelerator(a), Dtype.BF16, workload) for a in ("H100", "A100")
    }
    for p in costs.values():
        assert p.cost_per_million_output_tokens == pytest.approx(
            p.cost_per_hour / (p.output_tokens_per_s * 3600) * 1e6
        )


def test_calibration_ewma() -> None:
    cal = Calibration(alpha=0.5)
    assert cal.factor("m", "H100") == 1.0
    assert cal.observe("m", "H100", predicted_tps=100, observed_tps=50, saturated=True) == pytest.approx(0.75)
    assert cal.observe("m", "H100", predicted_tps=100, observed_tps=50, saturated=True) == pytest.approx(
        0.625
    )
    assert cal.observe("m", "H100", predicted_tps=100, observed_tps=5, saturated=False) == pytest.approx(
        0.625
    )
    for _ in range(50):
        cal.observe("m", "H100", predicted_tps=100, observed_tps=10_000, saturated=True)
    assert cal.factor("m", "H100") == pytest.approx(4.0)  # clamped
    prediction = predict(QWEN7, H100, 1, Dtype.BF16, Workload())
    cal.factors[(QWEN7.name, "H100")] = 0.5
    assert cal.apply(prediction).output_tokens_per_s == pytest.approx(prediction.output_tokens_per_s * 0.5)


def test_the_mix_tail_sizes_the_shape_not_only_the_mean() -> None:
    """Same model and means: a long p95 prompt needs more prefill compute (a larger TP degree),
    and the explanation says what sized the shape and why the smaller degree fails."""
    short = Workload(1000, 256, 2.0, 0.05)
    long = Workload(1000, 256, 2.0, 0.05, input_tokens_p95=60_000)
    base = smallest_feasible_tp(QWEN7, H100, Dtype.BF16, short)
    tail = smallest_feasible_tp(QWEN7, H100, Dtype.BF16, long)
    assert base.feasible and tail.feasible and tail.tp > base.tp
    assert tail.prefill_tokens_per_s > base.prefill_tokens_per_s
    assert tail.note.startswith("p95 prompt 60000 tokens prefills in")
    assert (
        "tp1: p95 prompt of 60000 tokens takes" in tail.note and "over the TTFT target 2000 ms" in tail.note
    )
    assert base.note == ""  # no tail given: the mean alone, as before
    # a tail prompt no degree can prefill in time makes the type infeasible, naming the p95
    worst = smallest_feasible_tp(QWEN7, H20, Dtype.BF16, long)
    assert not worst.feasible and "p95 prompt of 60000 tokens" in worst.reason


def test_the_kv_cache_must_hold_a_tail_sequence_at_the_planned_batch() -> None:
    mean = Workload(1000, 256, 60.0, 0.2)
    tail = Workload(1000, 256, 60.0, 0.2, input_tokens_p95=8000, output_tokens_p95=2000)
    plain, withtail = predict(QWEN72, H100, 2, Dtype.BF16, mean), predict(QWEN72, H100, 2, Dtype.BF16, tail)
    assert plain.feasible and withtail.feasible
    assert withtail.kv_capacity_tokens == plain.kv_capacity_tokens
    # one 10k-token sequence beside batch - 1 mean ones still fits the KV cache
    assert (withtail.batch - 1) * 1256 + 10_000 <= withtail.kv_capacity_tokens
    assert withtail.batch <= plain.batch
    huge = Workload(1000, 256, 600.0, 0.2, input_tokens_p95=plain.kv_capacity_tokens)
    refused = predict(QWEN72, H100, 2, Dtype.BF16, huge)
    assert not refused.feasible and "less than one p95" in refused.reason
    assert smallest_feasible_tp(QWEN72, H100, Dtype.BF16, huge).tp > 2
