"""Control-plane settings, validated once at startup with field-named errors.

The heartbeat interval is sent to every agent, which clamps it to ``[HEARTBEAT_MIN_S,
HEARTBEAT_MAX_S]`` (agents/runtime.py): a tiny value would make agents busy-loop, a huge one would
take minutes to notice a dead node. The control plane refuses values outside that same range at
startup, so the interval it judges beats by is the one agents actually use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MiB = 1024**2
HEARTBEAT_MIN_S = 0.1  # the agents' clamp (agents.runtime.HEARTBEAT_MIN_S / _MAX_S)
HEARTBEAT_MAX_S = 30.0


class ControlPlaneConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = "127.0.0.1:50051"
    etcd_endpoint: str = "127.0.0.1:2379"  # host:port, or the members of a cluster, comma-separated
    etcd_tls_ca: Path | None = None  # set: TLS to etcd, verified against this CA
    etcd_tls_cert: Path | None = None  # client certificate for etcd's --client-cert-auth
    etcd_tls_key: Path | None = None
    heartbeat_interval_s: float = 1.0  # within [HEARTBEAT_MIN_S, HEARTBEAT_MAX_S]
    suspect_after_missed: Annotated[int, Field(ge=1, le=1000)] = 3
    lost_after_s: Annotated[float, Field(gt=0, le=86400)] = 10.0
    metrics_address: str | None = None  # "host:port" for the Prometheus endpoint; None: off
    max_message_bytes: Annotated[int, Field(ge=64 * 1024, le=64 * MiB)] = 4 * MiB
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: mutual TLS
    tenants_file: Path | None = None  # tenants' bearer tokens and quotas (re-read when it changes)
    operators_file: Path | None = None  # operators' bearer tokens and roles (re-read when it changes)
    insecure: bool = False  # allow plaintext on a non-loopback address (never the default)
    # plaintext loopback callers without credentials become the admin (any user on the host): opt-in
    insecure_local_admin: bool = False
    executor_tls_ca: Path | None = None  # set: mTLS to executors, this instance's tls_cert as client
    max_streams_per_principal: Annotated[int, Field(ge=1, le=100_000)] = 32
    audit_max_entries: Annotated[int, Field(ge=100, le=10_000_000)] = 10_000
    catalog_file: Path | None = None  # operator overrides of the packaged catalog
    executors: dict[str, str] = {}  # cluster -> executor host:port; empty: no replicas are started
    reconcile_interval_s: Annotated[float, Field(ge=0.05, le=600)] = 1.0
    engine_mode: Literal["simulated", "real"] = "simulated"
    sim_start_delay_s: Annotated[float, Field(ge=0, le=3600)] = 2.0
    replica_start_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 900.0
    autoscale_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    autoscale_down_delay_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    autoscale_burst_hold_s: Annotated[float, Field(ge=0, le=86400)] = 600.0
    # seconds idle before a request that opted in (autoscaling.scale_to_zero) scales to zero
    autoscale_zero_after_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    autoscale_history: Annotated[int, Field(ge=1, le=100_000)] = 200  # decisions kept per request
    leader_ttl_s: Annotated[int, Field(ge=2, le=300)] = 5  # etcd lease of the leader key
    identity: str = ""  # this instance in the leader key; default: hostname:port:pid
    operator_namespaces: list[str] = []  # CapacityRequest namespaces to watch; empty: no operator
    gateway_url: str = ""  # the gateway's base URL, shown as each capacity request's endpoint

    @field_validator("heartbeat_interval_s")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if not HEARTBEAT_MIN_S <= value <= HEARTBEAT_MAX_S:  # NaN fails too
            raise ValueError(
                f"heartbeat_interval_s: {value:g} s is outside {HEARTBEAT_MIN_S:g}-{HEARTBEAT_MAX_S:g} s "
                "(the range agents accept; they would clamp it and beat at another pace)"
            )
        return value

    @model_validator(mode="after")
    def _etcd_tls(self) -> ControlPlaneConfig:
        if (self.etcd_tls_cert is None) != (self.etcd_tls_key is None):
            raise ValueError("etcd_tls_cert and etcd_tls_key must be given together")
        if self.etcd_tls_cert is not None and self.etcd_tls_ca is None:
            raise ValueError("etcd_tls_cert needs etcd_tls_ca (the CA that signed etcd's certificate)")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> ControlPlaneConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> ControlPlaneConfig:
        if self.tls_cert is None and not self.insecure and not is_loopback(self.address):
            raise ValueError(
                f"address: {self.address} is not a loopback address; serve it with TLS "
                "(tls_cert, tls_key, tls_client_ca) or say insecure explicitly"
            )
        if self.executor_tls_ca is not None and self.tls_cert is None:
            raise ValueError("executor_tls_ca needs tls_cert and tls_key (this instance's identity)")
        return self

    @model_validator(mode="after")
    def _executors(self) -> ControlPlaneConfig:
        for cluster, address in self.executors.items():
            host, _, port = address.rpartition(":")
            if not cluster or not host or not port.isdigit():
                raise ValueError(f"executors.{cluster or '?'}: expected cluster=host:port, got {address!r}")
        return self

    @model_validator(mode="after")
    def _etcd(self) -> ControlPlaneConfig:
        parse_endpoints(self.etcd_endpoint)
        return self

    @property
    def etcd_endpoints(self) -> list[tuple[str, int]]:
        """The members of the etcd cluster, in the order the store tries them."""
        return parse_endpoints(self.etcd_endpoint)


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` -> pairs; ValueError naming ``etcd_endpoint`` otherwise."""
    pairs = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"etcd_endpoint: expected host:port[,host:port...], got {text!r}")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def is_loopback(address: str) -> bool:
    """``host:port`` names a loopback host (127.0.0.0/8, ::1, localhost)."""
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    return host == "localhost" or host.startswith("127.") or host == "::1"
