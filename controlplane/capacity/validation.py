"""Checks of a capacity spec against the catalog: known names, and a latency class that some
accelerator in the catalog can meet at all. Purely computational."""

from __future__ import annotations

import math

from controlplane.catalog.perf import PerfAssumptions, Workload, predict, smallest_feasible_tp
from controlplane.catalog.types import Catalog, ModelSpec
from controlplane.domain.capacity import CapacitySpec
from controlplane.errors import InvalidArgument
from controlplane.scheduler.demand import workload_of as workload_of  # re-exported: moved to the pure core

BATCH_ONE = PerfAssumptions(max_batch=1)


def check_spec(spec: CapacitySpec, catalog: Catalog, *, max_tp: int = 8) -> ModelSpec:
    """The model, or InvalidArgument naming the field that no catalog entry can satisfy."""
    model = catalog.models.get(spec.model)
    if model is None:
        raise InvalidArgument(
            "spec.model", f"unknown model {spec.model!r}; known: {', '.join(sorted(catalog.models))}"
        )
    for field in ("allowed_accelerators", "denied_accelerators"):
        for i, name in enumerate(getattr(spec, field)):
            if name not in catalog.accelerators:
                raise InvalidArgument(f"spec.{field}[{i}]", f"unknown accelerator type {name!r}")
    if spec.mean_input_tokens + spec.mean_output_tokens > model.context_length:
        raise InvalidArgument(
            "spec.mean_input_tokens",
            f"input plus output tokens exceed {model.name}'s context of {model.context_length}",
        )
    workload = workload_of(spec)
    fastest_tpot, fastest_prefill, where = math.inf, math.inf, ""
    for accelerator in catalog.accelerators.values():
        if not catalog.engines_for(model, accelerator.vendor):
            continue
        for dtype in model.dtypes:
            if dtype not in accelerator.dtypes:
                continue
            if smallest_feasible_tp(model, accelerator, dtype, workload, max_tp=max_tp).feasible:
                return model
            for tp in model.tp_sizes(max_tp):
                loose = Workload(workload.input_tokens, workload.output_tokens, math.inf, math.inf)
                single = predict(model, accelerator, tp, dtype, loose, BATCH_ONE)
                if single.feasible and single.tpot_s < fastest_tpot:
                    fastest_tpot, where = single.tpot_s, f"{accelerator.name} tp{tp}"
                if single.feasible:
                    fastest_prefill = min(fastest_prefill, single.prefill_s)
    if math.isinf(fastest_tpot):
        raise InvalidArgument(
            "spec.model", f"no accelerator type in the catalog can hold {model.name} within tp {max_tp}"
        )
    if fastest_tpot > workload.tpot_p95_s:
        raise InvalidArgument(
            "spec.latency.tpot_p95_ms",
            f"no accelerator can decode {model.name} that fast: "
            f"the fastest is {fastest_tpot * 1000:.1f} ms per token ({where})",
        )
    raise InvalidArgument(
        "spec.latency.ttft_p95_ms",
        f"no accelerator can prefill {spec.mean_input_tokens:.0f} tokens of {model.name} "
        f"within half the TTFT target; the fastest takes {fastest_prefill * 1000:.0f} ms",
    )
