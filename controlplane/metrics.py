"""Prometheus metrics of the control plane, one object per process (tests make their own registry).

What an operator graphs: nodes by vendor and state, heartbeat processing latency and rate,
state transitions, registrations by result, open agent streams; replicas by state, reconcile
pass time and errors, replica transitions and executor reachability; served tokens/s.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.nodes = Gauge(
            "tokenfab_nodes", "Nodes by vendor and state", ["vendor", "state"], registry=self.registry
        )
        self.devices = Gauge(
            "tokenfab_devices",
            "Accelerators by vendor and health",
            ["vendor", "health"],
            registry=self.registry,
        )
        self.heartbeat_seconds = Histogram(
            "tokenfab_heartbeat_processing_seconds",
            "Time to process one heartbeat on the control plane",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "tokenfab_heartbeats_total", "Heartbeats received, by result", ["result"], registry=self.registry
        )
        self.transitions = Counter(
            "tokenfab_node_transitions_total",
            "Node state transitions",
            ["from_state", "to_state"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "tokenfab_registrations_total", "Register calls, by result", ["result"], registry=self.registry
        )
        self.streams = Gauge("tokenfab_agent_streams", "Open agent Connect streams", registry=self.registry)
        self.authn_failures = Counter(
            "tokenfab_authn_failures_total", "Calls refused for missing or unknown credentials, by method",
            ["method"], registry=self.registry,
        )  # fmt: skip
        self.authz_denials = Counter(
            "tokenfab_authz_denials_total", "Calls refused by the authorization policy, by method and "
            "principal kind", ["method", "kind"], registry=self.registry,
        )  # fmt: skip
        self.health_flaps_damped = Counter(
            "tokenfab_device_health_flaps_damped_total",
            "Devices held unhealthy because their reported health kept changing",
            registry=self.registry,
        )
        self.quarantined_records = Counter(
            "tokenfab_quarantined_records_total", "Stored records that failed to load and were quarantined",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.store_errors = Counter(
            "tokenfab_store_errors_total",
            "Failed store operations, by operation",
            ["op"],
            registry=self.registry,
        )
        self.replicas = Gauge(
            "tokenfab_replicas", "Replicas by accelerator and state", ["accelerator", "state"],
            registry=self.registry,
        )  # fmt: skip
        self.replica_transitions = Counter(
            "tokenfab_replica_transitions_total", "Replica state transitions", ["from_state", "to_state"],
            registry=self.registry,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            "tokenfab_reconcile_seconds", "Time of one reconcile pass (observe, decide, persist, act)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=self.registry,
        )  # fmt: skip
        self.reconcile_errors = Counter(
            "tokenfab_reconcile_errors_total", "Reconcile step failures, by step", ["step"],
            registry=self.registry,
        )  # fmt: skip
        self.executor_up = Gauge(
            "tokenfab_executor_up", "1 when the cluster's executor answered the last pass", ["cluster"],
            registry=self.registry,
        )  # fmt: skip
        self.output_tokens = Gauge(
            "tokenfab_output_tokens_per_second", "Observed output tokens/s by model and accelerator",
            ["model", "accelerator"], registry=self.registry,
        )  # fmt: skip
        self.calibration = Gauge(
            "tokenfab_calibration_factor", "Observed / predicted throughput of busy replicas (EWMA)",
            ["model", "accelerator"], registry=self.registry,
        )  # fmt: skip
        self.leader = Gauge(
            "tokenfab_leader", "1 while this instance leads (reconciles, autoscales, runs the operator)",
            registry=self.registry,
        )  # fmt: skip
        self.failover_events = Counter(
            "tokenfab_failover_events_total",
            "Failover steps: replica_lost, replica_failed, replacement_started, replica_retired, "
            "node_quarantined, preemption_notice",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.fence_commands = Counter(
            "tokenfab_fence_commands_total",
            "FENCE commands pushed to agents (replicas a node must no longer run)",
            registry=self.registry,
        )
        self.etcd_failovers = Counter(
            "tokenfab_etcd_failovers_total",
            "Moves of this instance's etcd client to another member (one was unreachable)",
            registry=self.registry,
        )
        per_request = ["request"]
        self.autoscaler_desired = Gauge(
            "tokenfab_autoscaler_desired_replicas", "Replicas the autoscaler wants per capacity request",
            per_request, registry=self.registry,
        )  # fmt: skip
        self.autoscaler_target = Gauge(
            "tokenfab_autoscaler_target_output_tokens_per_second",
            "Output tokens/s the request's replicas are sized for (autoscaled; >= the reserved target)",
            per_request, registry=self.registry,
        )  # fmt: skip
        self.autoscaler_demand = Gauge(
            "tokenfab_autoscaler_demand_output_tokens_per_second",
            "Output tokens/s served by the request's Ready replicas (missing ones extrapolated)",
            per_request, registry=self.registry,
        )  # fmt: skip
        self.autoscaler_forecast = Gauge(
            "tokenfab_autoscaler_forecast_output_tokens_per_second",
            "Output tokens/s the autoscaler sized for (trend forecast, or the burst window)",
            per_request, registry=self.registry,
        )  # fmt: skip
        self.autoscaler_decisions = Counter(
            "tokenfab_autoscaler_decisions_total", "Autoscaler decisions by action and mode",
            ["action", "mode"], registry=self.registry,
        )  # fmt: skip
        self.autoscaler_decide_seconds = Histogram(
            "tokenfab_autoscaler_decide_seconds", "Time to run the scaling policy for one request",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1), registry=self.registry,
        )  # fmt: skip

    def forget_request(self, request_id: str) -> None:
        """Drop a request's autoscaler series once it is gone (label sets are not free)."""
        for gauge in (
            self.autoscaler_desired, self.autoscaler_target, self.autoscaler_demand, self.autoscaler_forecast
        ):  # fmt: skip
            with contextlib.suppress(KeyError):
                gauge.remove(request_id)
