"""Prometheus metrics of the gateway: the demand it is offered and what it does with it.

What an operator (and the autoscaler) graphs: arrivals and offered tokens per tenant and model
(demand before admission, so refused and queued demand is visible, not only what replicas
served), admissions by class (guaranteed within the reservation, best effort above it), queue
length and wait, rejections by reason, upstream retries, served prompt and completion tokens per
tenant and capacity request (metering), request latency and the gateway's own overhead, and
outstanding tokens per replica (the router's view of load).
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.arrivals = Counter(
            "tokenfab_gateway_arrivals_total",
            "Calls offered, before admission",
            ["tenant", "model"],
            registry=r,
        )
        self.offered_tokens = Counter(
            "tokenfab_gateway_offered_tokens_total",
            "Tokens offered (prompt estimate; completion = max_tokens), before admission",
            ["tenant", "model", "kind"],
            registry=r,
        )
        self.admitted = Counter(
            "tokenfab_gateway_admitted_total",
            "Calls admitted, by class (guaranteed | best_effort)",
            ["tenant", "model", "cls"],
            registry=r,
        )
        self.rejections = Counter(
            "tokenfab_gateway_rejections_total",
            "Calls refused, by reason (rate, no_replica, unauthenticated, not_found, invalid, infeasible)",
            ["tenant", "model", "reason"],
            registry=r,
        )
        self.queue_length = Gauge(
            "tokenfab_gateway_queue_length", "Calls waiting for admission", ["tenant", "model"], registry=r
        )
        self.queue_wait = Histogram(
            "tokenfab_gateway_queue_wait_seconds",
            "Time calls waited for admission",
            ["tenant", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tokenfab_gateway_tokens_total",
            "Tokens served (usage reported by the replica), by kind (prompt | completion)",
            ["tenant", "request", "kind"],
            registry=r,
        )
        self.responses = Counter(
            "tokenfab_gateway_responses_total",
            "Responses by HTTP status",
            ["tenant", "model", "code"],
            registry=r,
        )
        self.retries = Counter(
            "tokenfab_gateway_retries_total",
            "Calls sent again to another replica before their first token, by cause",
            ["cause"],
            registry=r,
        )
        self.stream_cuts = Counter(
            "tokenfab_gateway_stream_cuts_total",
            "Streams cut after the first token (client saw an error)",
            registry=r,
        )
        self.latency = Histogram(
            "tokenfab_gateway_request_seconds", "Whole call, as the client sees it", ["tenant", "model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "tokenfab_gateway_ttft_seconds", "Time to the first streamed event", ["tenant", "model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.outstanding = Gauge(
            "tokenfab_gateway_replica_outstanding_tokens",
            "Tokens in flight per replica (the router's load)",
            ["replica"],
            registry=r,
        )
        self.share = Gauge(
            "tokenfab_gateway_reservation_share",
            "This instance's share of the lane's reserved tokens/s (its bucket's rate over the reservation)",
            ["tenant", "model"],
            registry=r,
        )
        self.replicas = Gauge(
            "tokenfab_gateway_routable_replicas",
            "Ready replicas per tenant and model",
            ["tenant", "model"],
            registry=r,
        )

    def totals(self) -> dict[str, float]:
        """Counters summed over their labels, for a live view: arrivals, admitted, rejections (and
        ``rejections_rate``), queue_length, retries, stream_cuts, responses_<code>."""
        out: dict[str, float] = {}
        for metric in (self.arrivals, self.admitted, self.rejections, self.queue_length, self.retries,
                       self.stream_cuts, self.responses):  # fmt: skip
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    name = family.name.removeprefix("tokenfab_gateway_")
                    out[name] = out.get(name, 0.0) + sample.value
                    if family.name.endswith("rejections"):
                        reason = f"rejections_{sample.labels.get('reason', '')}"
                        out[reason] = out.get(reason, 0.0) + sample.value
                    if family.name.endswith("responses"):
                        code = f"responses_{sample.labels.get('code', '')}"
                        out[code] = out.get(code, 0.0) + sample.value
        return out

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoized: the hot path takes a dozen per call, and
        prometheus_client's lookup (validation, a lock) costs more than the dict here."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def forget(self, metric: Any, *labels: str) -> None:
        """Remove a series (and its memoized child)."""
        self._children.pop((id(metric), labels), None)
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
