"""Prometheus metrics of the control plane, one object per process (tests make their own registry).

What an operator graphs: nodes by vendor and state, heartbeat processing latency and rate,
state transitions, registrations by result, and open agent streams.
"""

from __future__ import annotations

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
        self.store_errors = Counter(
            "tokenfab_store_errors_total",
            "Failed store operations, by operation",
            ["op"],
            registry=self.registry,
        )
