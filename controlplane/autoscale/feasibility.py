"""Which requests no replica can serve within the SLO, whatever the autoscaler does.

A request is *infeasible* when

* its prompt plus output exceed the model's context length (no engine accepts it), or
* they exceed the KV cache of every allowed replica shape (type x tensor-parallel degree), or
* its prompt cannot be prefilled within its TTFT target on any allowed shape, even alone and in
  one engine step (the most lenient physical bound: the step's compute-bound time
  ``2 x active parameters x prompt tokens / FLOPS``, times the TP communication factor, plus the
  step overhead; chunked prefill can only be slower).

Such a request would miss whatever the replica count, so the simulator reports it apart and never
scores it as an autoscaler miss; the live path (the gateway, through :class:`LiveCheck`) answers
it with a 400 naming the field (``prompt`` or ``max_tokens``) and :meth:`Feasibility.verdict`'s
reason, before admission. Because the bound is the most lenient one, a request counted
infeasible here is one that no schedule could serve: the count never excuses a miss that more or
other replicas would fix.

:class:`TtftTarget` also offers the length-aware TTFT target production SLOs are often written
with (``base + prompt_tokens / rate``), so long prompts get the time their prefill needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.catalog import Catalog, Dtype
from controlplane.catalog.perf import EngineProfile, PerfAssumptions


@dataclass(frozen=True, slots=True)
class TtftTarget:
    """``base_s``, plus ``prompt_tokens / prompt_tokens_per_s`` when that rate is set (> 0)."""

    base_s: float
    prompt_tokens_per_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"ttft base_s must be positive, got {self.base_s}")
        if self.prompt_tokens_per_s < 0:
            raise ValueError(f"ttft prompt_tokens_per_s must not be negative, got {self.prompt_tokens_per_s}")

    def for_prompt(self, prompt_tokens: int) -> float:
        if self.prompt_tokens_per_s > 0:
            return self.base_s + prompt_tokens / self.prompt_tokens_per_s
        return self.base_s

    def describe(self) -> str:
        if self.prompt_tokens_per_s > 0:
            return f"{self.base_s:g}s + prompt tokens / {self.prompt_tokens_per_s:g}"
        return f"{self.base_s:g}s"


@dataclass(frozen=True, slots=True)
class _Shape:
    name: str  # "910C x2"
    kv_capacity_tokens: int
    profile: EngineProfile


@dataclass(frozen=True, slots=True)
class Feasibility:
    """The limits of the allowed replica shapes for one model and SLO."""

    model: str
    context_tokens: int
    ttft: TtftTarget
    shapes: tuple[_Shape, ...]

    @property
    def max_kv_tokens(self) -> int:
        return max((s.kv_capacity_tokens for s in self.shapes), default=0)

    def prefill_s(self, prompt_tokens: int) -> float:
        """The fastest any allowed shape prefills ``prompt_tokens`` (alone, in one step)."""
        return min(
            (s.profile.step_time(0, 0.0, float(prompt_tokens)) for s in self.shapes),
            default=float("inf"),
        )

    def check(self, input_tokens: int, output_tokens: int) -> str | None:
        """``None`` when some allowed shape can serve the request within the SLO; otherwise the
        reason, as a short kind and the figures (``"context: ..."``, ``"kv: ..."``, ``"ttft: ..."``)."""
        verdict = self.verdict(input_tokens, output_tokens)
        return None if verdict is None else verdict.reason

    def verdict(self, input_tokens: int, output_tokens: int) -> Infeasible | None:
        """:meth:`check`, with the request field to blame: ``prompt`` when the prompt alone is
        beyond the limit (or too long to prefill in time), else ``max_tokens``."""
        total = input_tokens + output_tokens
        if total > self.context_tokens:
            return Infeasible(
                "prompt" if input_tokens > self.context_tokens else "max_tokens",
                f"context: {input_tokens} prompt + {output_tokens} output tokens exceed {self.model}'s "
                f"context of {self.context_tokens}",
            )
        if total > self.max_kv_tokens:
            return Infeasible(
                "prompt" if input_tokens > self.max_kv_tokens else "max_tokens",
                f"kv: {total} tokens exceed every allowed shape's KV cache (at most {self.max_kv_tokens})",
            )
        target = self.ttft.for_prompt(input_tokens)
        fastest = self.prefill_s(input_tokens)
        if fastest > target:
            return Infeasible(
                "prompt",
                f"ttft: a {input_tokens}-token prompt takes at least {fastest:.2f}s to prefill on any "
                f"allowed shape, over the {target:.2f}s TTFT target",
            )
        return None


@dataclass(frozen=True, slots=True)
class Infeasible:
    field: str  # the request field to blame: "prompt" or "max_tokens"
    reason: str


class LiveCheck:
    """The live path's check (the gateway, before admission): one :class:`Feasibility` per
    (model, TTFT target), built on first use over every accelerator type of the catalog at up to
    ``max_tp`` devices. The gateway does not know the fleet, so it assumes the most capable
    shapes the catalog offers: a request refused here is refused on any fleet, never one that a
    bigger or other replica could serve. A model the catalog does not know is not checked."""

    def __init__(self, catalog: Catalog, *, max_tp: int = 8) -> None:
        self.catalog = catalog
        self.max_tp = max_tp
        self._cache: dict[tuple[str, float], Feasibility] = {}

    def check(self, model: str, ttft_s: float, input_tokens: int, output_tokens: int) -> Infeasible | None:
        if model not in self.catalog.models or not ttft_s > 0:
            return None
        key = (model, ttft_s)
        feasibility = self._cache.get(key)
        if feasibility is None:
            types = {name: self.max_tp for name in self.catalog.accelerators}
            feasibility = self._cache[key] = feasibility_for(self.catalog, model, types, TtftTarget(ttft_s))
        return feasibility.verdict(input_tokens, output_tokens)


def feasibility_for(
    catalog: Catalog,
    model: str,
    types: dict[str, int],
    ttft: TtftTarget,
    *,
    dtype: Dtype = Dtype.BF16,
    assumptions: PerfAssumptions | None = None,
) -> Feasibility:
    """The shapes of ``types`` (accelerator type -> devices per node, the TP limit) that hold the
    model's weights with room for a KV cache."""
    spec = catalog.model(model)
    shapes: list[_Shape] = []
    for name in sorted(types):
        accelerator = catalog.accelerators.get(name)
        if accelerator is None or not catalog.engines_for(spec, accelerator.vendor):
            continue
        for tp in spec.tp_sizes(types[name]):
            profile = EngineProfile.of(spec, accelerator, tp, dtype, assumptions)
            if profile.kv_capacity_tokens > 0:
                shapes.append(_Shape(f"{name} x{tp}", profile.kv_capacity_tokens, profile))
    return Feasibility(spec.name, spec.context_length, ttft, tuple(shapes))
