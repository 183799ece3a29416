"""Performance model: predicted tokens/s of one replica at a latency target. Purely computational.

For (model, accelerator type, tensor-parallel size, dtype) and a workload (mean prompt and output
lengths, TTFT and TPOT targets) it predicts what one replica sustains. Roofline reasoning:

* **Memory fit.** Each device gives ``memory x memory_utilisation - runtime_overhead`` to the
  engine (vLLM's default gpu_memory_utilization is 0.9). Weights take
  ``parameters x bytes(dtype)`` spread over the TP group (MoE: all experts stay resident); the rest
  is KV cache. ``kv_capacity / (kv_bytes_per_token x (input + output))`` bounds the batch.
* **Decode** is bound by memory bandwidth: each step streams the *active* weights once plus the KV
  cache of every running sequence (mean context ``input + output/2``), at
  ``bandwidth x bandwidth_efficiency`` over the TP group, or by compute
  (``2 x active_parameters`` FLOPs per token) when that is slower. Each extra TP rank adds
  ``tp_comm_penalty`` to the step time (all-reduce), plus a fixed ``step_overhead_s``.
  The TPOT target bounds the batch: the largest batch whose step time stays within it.
* **Prefill** is bound by compute: ``2 x active_parameters x input`` FLOPs at
  ``tflops x compute_efficiency``. A prompt's prefill must fit in ``ttft_headroom`` of the TTFT
  target, leaving the rest for queueing.
* **The mix's tail** (when the workload gives p95 prompt/output lengths): the p95 prompt, alone,
  must prefill within the whole TTFT target (it is a p95 request; the mean prompt keeps the
  headroom rule), and the KV cache must hold one p95 sequence beside ``batch - 1`` mean ones at the
  planned batch, so a long prompt is neither late by construction nor preempted on arrival. A
  long-prompt mix therefore needs more prefill compute and KV (a larger TP degree or another type)
  than a short-prompt mix of the same mean cost; :attr:`Prediction.note` says what sized it.
* **Mixed load** (continuous batching with chunked prefill): in steady state each step decodes
  ``batch`` sequences and also processes ``batch x input/output`` prompt tokens of the requests
  that replace finished ones. That step time is the TPOT users see and is what the TPOT target
  bounds; output tokens/s = batch / step time, input tokens/s follows from the ratio.
  ``decode_tokens_per_s`` reports pure decoding without prompt interference, for reference.

Not modelled: attention FLOPs quadratic in prompt length, speculative decoding, prefix caching,
FP8/INT8 compute speed-ups (only their smaller weights), network limits between TP ranks beyond
the linear penalty. Every assumption is a field of :class:`PerfAssumptions`; the online
:class:`Calibration` corrects each (model, accelerator) with observed throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from controlplane.catalog.types import AcceleratorType, Dtype, GiB, ModelSpec


@dataclass(frozen=True, slots=True)
class PerfAssumptions:
    bandwidth_efficiency: float = 0.75
    compute_efficiency: float = 0.45
    memory_utilisation: float = 0.90
    runtime_overhead_gib: float = 2.0
    tp_comm_penalty: float = 0.06
    step_overhead_s: float = 0.002
    max_batch: int = 256  # vLLM's default max_num_seqs
    ttft_headroom: float = 0.5


@dataclass(frozen=True, slots=True)
class Workload:
    input_tokens: float = 1024.0
    output_tokens: float = 256.0
    ttft_p95_s: float = 1.0
    tpot_p95_s: float = 0.05
    input_tokens_p95: float = 0.0  # the mix's tail; 0 (or below the mean): the mean
    output_tokens_p95: float = 0.0
    ttft_tail_s: float = 0.0  # the TTFT target of the p95 prompt (length-aware SLOs); 0: ttft_p95_s

    @property
    def tail_input_tokens(self) -> float:
        return max(self.input_tokens, self.input_tokens_p95)

    @property
    def tail_output_tokens(self) -> float:
        return max(self.output_tokens, self.output_tokens_p95)

    @property
    def has_tail(self) -> bool:
        return self.input_tokens_p95 > self.input_tokens or self.output_tokens_p95 > self.output_tokens


@dataclass(frozen=True, slots=True)
class Prediction:
    model: str
    accelerator: str
    tp: int
    dtype: Dtype
    feasible: bool
    reason: str = ""
    batch: int = 0
    tpot_s: float = math.inf
    prefill_s: float = math.inf
    kv_capacity_tokens: int = 0
    decode_tokens_per_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    input_tokens_per_s: float = 0.0
    cost_per_hour: float = 0.0
    note: str = ""  # what sized the shape (the mix's tail, smaller TP degrees that failed)

    @property
    def cost_per_million_output_tokens(self) -> float:
        if self.output_tokens_per_s <= 0:
            return math.inf
        return self.cost_per_hour / (self.output_tokens_per_s * 3600) * 1e6


def predict(
    model: ModelSpec,
    accelerator: AcceleratorType,
    tp: int,
    dtype: Dtype,
    workload: Workload,
    assumptions: PerfAssumptions | None = None,
) -> Prediction:
    """One replica's predicted capacity; ``feasible=False`` with a reason when it cannot meet the SLO."""
    a = assumptions or PerfAssumptions()
    base = Prediction(
        model.name, accelerator.name, tp, dtype, False, cost_per_hour=tp * accelerator.price_per_hour
    )
    if dtype not in model.dtypes:
        return replace(base, reason=f"{model.name} is not offered in {dtype.value}")
    if dtype not in accelerator.dtypes:
        return replace(base, reason=f"{accelerator.name} does not support {dtype.value}")
    if model.attention_heads % tp:
        return replace(base, reason=f"tp {tp} does not divide {model.attention_heads} attention heads")
    usable = tp * (accelerator.memory_bytes * a.memory_utilisation - a.runtime_overhead_gib * GiB)
    weights = model.weight_bytes(dtype)
    kv_bytes = usable - weights
    if kv_bytes <= 0:
        return replace(
            base,
            reason=f"weights need {weights / GiB:.0f} GiB; "
            f"{tp} x {accelerator.name} give {usable / GiB:.0f} GiB",
        )
    context = workload.input_tokens + workload.output_tokens
    tail_context = workload.tail_input_tokens + workload.tail_output_tokens
    kv_tokens = int(kv_bytes // model.kv_bytes_per_token)
    if kv_tokens < tail_context:
        what = "p95" if workload.has_tail else ""
        return replace(
            base,
            kv_capacity_tokens=kv_tokens,
            reason=f"KV cache holds {kv_tokens} tokens, less than one {what}{' ' if what else ''}"
            f"{tail_context:.0f}-token sequence",
        )
    # one tail sequence beside batch - 1 mean ones (without a tail: kv_tokens // context)
    batch_kv = int((kv_tokens - tail_context) // context) + 1

    profile = EngineProfile.of(model, accelerator, tp, dtype, a)
    mean_context = workload.input_tokens + workload.output_tokens / 2
    prompt_per_output = workload.input_tokens / workload.output_tokens

    def step(batch: int) -> float:
        # Steady state under chunked prefill: every step also carries the prompt tokens of the
        # requests that replace finished ones (batch x input/output of them), so prompt
        # processing slows every decode step: that is the TPOT users see.
        return profile.step_time(batch, mean_context, batch * prompt_per_output)

    if step(1) > workload.tpot_p95_s:
        return replace(
            base,
            kv_capacity_tokens=kv_tokens,
            reason=f"one sequence decodes at {step(1) * 1000:.1f} ms/token, over the TPOT target "
            f"{workload.tpot_p95_s * 1000:.0f} ms",
        )
    low, high = 1, min(batch_kv, a.max_batch)
    while low < high:  # largest batch whose step time meets the TPOT target (step is monotonic)
        mid = (low + high + 1) // 2
        if step(mid) <= workload.tpot_p95_s:
            low = mid
        else:
            high = mid - 1
    batch, tpot = low, step(low)
    prefill_rate = profile.prefill_tokens_per_s
    prefill_s = workload.input_tokens / prefill_rate
    if prefill_s > workload.ttft_p95_s * a.ttft_headroom:
        return replace(
            base,
            kv_capacity_tokens=kv_tokens,
            reason=f"prefill of {workload.input_tokens:.0f} tokens takes {prefill_s * 1000:.0f} ms, over "
            f"{a.ttft_headroom:.0%} of the TTFT target {workload.ttft_p95_s * 1000:.0f} ms",
        )
    note = ""
    if workload.has_tail:
        tail_ttft = workload.ttft_tail_s or workload.ttft_p95_s
        tail_prefill_s = workload.tail_input_tokens / prefill_rate
        if tail_prefill_s > tail_ttft:
            return replace(
                base,
                kv_capacity_tokens=kv_tokens,
                reason=f"p95 prompt of {workload.tail_input_tokens:.0f} tokens takes "
                f"{tail_prefill_s * 1000:.0f} ms to prefill, over the TTFT target "
                f"{tail_ttft * 1000:.0f} ms",
            )
        note = (
            f"p95 prompt {workload.tail_input_tokens:.0f} tokens prefills in {tail_prefill_s * 1000:.0f} ms "
            f"(TTFT target {tail_ttft * 1000:.0f} ms); KV {kv_tokens} tokens holds batch "
            f"{batch} with one p95 {tail_context:.0f}-token sequence"
        )
    output_per_s = batch / tpot
    return replace(
        base,
        feasible=True,
        note=note,
        batch=batch,
        tpot_s=tpot,
        prefill_s=prefill_s,
        kv_capacity_tokens=kv_tokens,
        decode_tokens_per_s=batch / profile.step_time(batch, mean_context),
        prefill_tokens_per_s=prefill_rate,
        output_tokens_per_s=output_per_s,
        input_tokens_per_s=output_per_s * prompt_per_output,
    )


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """The roofline of one replica, shared by :func:`predict` and the simulated engine."""

    active_weight_bytes: float
    kv_bytes_per_token: float
    bandwidth_bytes_s: float  # over the TP group, after efficiency
    flops: float  # over the TP group, after efficiency
    active_parameters: float
    comm: float  # step-time factor for TP all-reduce
    step_overhead_s: float
    kv_capacity_tokens: int
    max_batch: int

    @classmethod
    def of(
        cls,
        model: ModelSpec,
        accelerator: AcceleratorType,
        tp: int,
        dtype: Dtype,
        assumptions: PerfAssumptions | None = None,
    ) -> EngineProfile:
        a = assumptions or PerfAssumptions()
        usable = tp * (accelerator.memory_bytes * a.memory_utilisation - a.runtime_overhead_gib * GiB)
        kv_bytes = max(0.0, usable - model.weight_bytes(dtype))
        return cls(
            active_weight_bytes=model.active_weight_bytes(dtype),
            kv_bytes_per_token=model.kv_bytes_per_token,
            bandwidth_bytes_s=tp * accelerator.bandwidth_bytes_s * a.bandwidth_efficiency,
            flops=tp * accelerator.flops * a.compute_efficiency,
            active_parameters=model.active_parameters,
            comm=1.0 + a.tp_comm_penalty * (tp - 1),
            step_overhead_s=a.step_overhead_s,
            kv_capacity_tokens=int(kv_bytes // model.kv_bytes_per_token),
            max_batch=a.max_batch,
        )

    def step_time(self, batch: int, mean_context_tokens: float, prefill_tokens: float = 0.0) -> float:
        """Seconds for one engine step decoding ``batch`` sequences of ``mean_context_tokens``
        context, plus ``prefill_tokens`` of prompt processed in the same step (chunked prefill)."""
        memory_time = (self.active_weight_bytes + batch * self.kv_bytes_per_token * mean_context_tokens) / (
            self.bandwidth_bytes_s
        )
        compute_time = 2 * self.active_parameters * (batch + prefill_tokens) / self.flops
        return max(memory_time, compute_time) * self.comm + self.step_overhead_s

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.flops / (2 * self.active_parameters) / self.comm


def prefill_chunk_tokens(
    model: ModelSpec,
    accelerator: AcceleratorType,
    tp: int,
    dtype: Dtype,
    workload: Workload,
    assumptions: PerfAssumptions | None = None,
) -> int:
    """Prompt tokens per engine step (vLLM's ``max_num_batched_tokens``), sized to the TPOT
    target: a step carrying a full chunk takes about 0.8 x TPOT, so a long prompt being prefilled
    does not push the requests decoding beside it over their TPOT (a fixed 2048 would, on every
    type whose prefill is slower than about 2048 / TPOT tokens/s), and never less than the prompt
    tokens a step carries in the predicted steady state. Between 64 and 8192."""
    p = predict(model, accelerator, tp, dtype, workload, assumptions)
    steady = p.batch * workload.input_tokens / workload.output_tokens if p.feasible else 0.0
    budget = p.prefill_tokens_per_s * workload.tpot_p95_s * 0.8
    return max(64, min(8192, int(max(budget, 1.1 * steady))))


def smallest_feasible_tp(
    model: ModelSpec,
    accelerator: AcceleratorType,
    dtype: Dtype,
    workload: Workload,
    *,
    max_tp: int = 8,
    assumptions: PerfAssumptions | None = None,
) -> Prediction:
    """The smallest TP size (a power of two dividing the heads, at most ``max_tp``, usually the
    devices of one node) that meets the workload; otherwise the largest size's failure."""
    last: Prediction | None = None
    smaller: list[str] = []
    for tp in model.tp_sizes(max_tp):
        last = predict(model, accelerator, tp, dtype, workload, assumptions)
        if last.feasible:
            if smaller:  # say why the smaller degrees would not do
                why = "; ".join(smaller)
                last = replace(last, note=f"{last.note}; {why}" if last.note else why)
            return last
        smaller.append(f"tp{tp}: {last.reason}")
    if last is None:
        return Prediction(model.name, accelerator.name, 0, dtype, False, reason=f"no TP size up to {max_tp}")
    return last


@dataclass
class Calibration:
    """Online correction per (model, accelerator): an EWMA of observed / predicted throughput.

    Feed only saturated observations (a busy replica): an idle replica's throughput measures its
    demand, not its capacity, and would drag the factor down. Factors are clamped to
    ``[lower, upper]`` so one bad sample cannot make a replica look ten times faster.
    """

    alpha: float = 0.2
    lower: float = 0.25
    upper: float = 4.0
    factors: dict[tuple[str, str], float] = field(default_factory=dict)

    def factor(self, model: str, accelerator: str) -> float:
        return self.factors.get((model, accelerator), 1.0)

    def observe(
        self, model: str, accelerator: str, *, predicted_tps: float, observed_tps: float, saturated: bool
    ) -> float:
        current = self.factor(model, accelerator)
        if not saturated or predicted_tps <= 0 or observed_tps < 0 or not math.isfinite(observed_tps):
            return current
        ratio = min(self.upper, max(self.lower, observed_tps / predicted_tps))
        updated = min(self.upper, max(self.lower, (1 - self.alpha) * current + self.alpha * ratio))
        self.factors[(model, accelerator)] = updated
        return updated

    def apply(self, prediction: Prediction) -> Prediction:
        f = self.factor(prediction.model, prediction.accelerator)
        if f == 1.0 or not prediction.feasible:
            return prediction
        return replace(
            prediction,
            decode_tokens_per_s=prediction.decode_tokens_per_s * f,
            prefill_tokens_per_s=prediction.prefill_tokens_per_s * f,
            output_tokens_per_s=prediction.output_tokens_per_s * f,
            input_tokens_per_s=prediction.input_tokens_per_s * f,
        )
