"""`tokenfab up --headless` as a user runs it, and the CLI against it.

One embedded run per module: a real etcd child, three local Ray clusters with their executors,
the control plane, ten agent processes with their raylets, the sample request and demo load.

What a test asserts on comes from `tokenfab` CLI processes. The waits before it poll the
control plane over gRPC from this process with the same credentials (``Demo``): a CLI process
costs about a CPU-second on two busy cores, and a poll loop of them slowed what it waited for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from controlplane.embedded.etcd import free_port
from controlplane.embedded.up import ray_temp_root
from tests.integration.conftest import eventually
from tokenfab.tls import ClientTLS, TLSConfigError
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc, fleet_pb2, fleet_pb2_grpc, types_pb2

REQUIRED_KEYS = {"id", "cluster", "vendor", "accelerator", "device_count", "memory_gib", "state", "leased",
                 "lease_expires_at"}  # fmt: skip


STATE: dict[str, Path] = {}  # address -> the state dir of the `up` serving it


def tokenfab(*args: str, address: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI as a user of the demo runs it: no credential flags; it finds them in the state dir."""
    env = {**os.environ, "TOKENFAB_ADDRESS": address}
    if address in STATE:
        env["TOKENFAB_STATE_DIR"] = str(STATE[address])
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", *args],
        capture_output=True, text=True, timeout=60, env=env, check=check,
    )  # fmt: skip


def nodes_json(address: str) -> list[dict[str, object]]:
    done = tokenfab("nodes", "-o", "json", address=address, check=False)
    if done.returncode != 0:
        return []
    parsed: list[dict[str, object]] = json.loads(done.stdout)
    return parsed


class Demo:
    """The demo's control plane over gRPC from this process, as the CLI reaches it (the state
    dir's CA, CLI certificate and admin token): for polling. Unreachable or not yet written
    credentials read as nothing yet."""

    def __init__(self, address: str, state: Path) -> None:
        self.address, self.state = address, state
        self._channel: grpc.Channel | None = None

    def _stubs(self) -> tuple[fleet_pb2_grpc.FleetServiceStub, capacity_pb2_grpc.CapacityServiceStub]:
        if self._channel is None:
            pki = self.state / "pki"
            tls = ClientTLS(pki / "ca.crt", pki / "client-cli.crt", pki / "client-cli.key")
            self._channel = grpc.secure_channel(
                self.address, tls.credentials(), options=tls.channel_options()
            )
        return fleet_pb2_grpc.FleetServiceStub(self._channel), capacity_pb2_grpc.CapacityServiceStub(
            self._channel
        )

    def _metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {(self.state / 'admin-token').read_text().strip()}"),)

    def node_states(self) -> list[str]:
        try:
            fleet, _ = self._stubs()
            nodes = fleet.ListNodes(fleet_pb2.ListNodesRequest(), metadata=self._metadata(), timeout=10).nodes
        except (OSError, TLSConfigError, grpc.RpcError):
            return []
        return [types_pb2.NodeState.Name(n.state).removeprefix("NODE_STATE_").lower() for n in nodes]

    def phase(self, request_id: str) -> str:
        try:
            _, capacity = self._stubs()
            got = capacity.Get(
                capacity_pb2.GetCapacityRequest(id=request_id), metadata=self._metadata(), timeout=10
            )
        except (OSError, TLSConfigError, grpc.RpcError):
            return ""
        return str(got.status.phase)

    def replicas(self, request_id: str = "") -> list[capacity_pb2.Replica] | None:
        try:
            _, capacity = self._stubs()
            query = capacity_pb2.ListReplicasRequest(request_id=request_id)
            return list(capacity.ListReplicas(query, metadata=self._metadata(), timeout=10).replicas)
        except (OSError, TLSConfigError, grpc.RpcError):
            return None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


DEMOS: dict[str, Demo] = {}  # address -> its gRPC poller


def demo(address: str, state: Path) -> Demo:
    return DEMOS.setdefault(address, Demo(address, state))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    state = tmp_path_factory.mktemp("up")
    address = f"127.0.0.1:{free_port()}"
    STATE[address] = state
    log = (state / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli.main", "up", "--headless", "--address", address,
         "--state-dir", str(state), "--metrics-address", f"127.0.0.1:{free_port()}",
         "--gateway-address", f"127.0.0.1:{free_port()}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield address, proc, state
    finally:
        if (poller := DEMOS.pop(address, None)) is not None:
            poller.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_up_brings_the_fleet_to_ready(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, proc, state = embedded
    states: list[str] = []

    def polled_ready() -> bool:
        assert proc.poll() is None, (state / "up.log").read_text()[-2000:]
        states[:] = demo(address, state).node_states()
        return len(states) >= 8 and set(states) == {"ready"}

    eventually(polled_ready, timeout=180, interval=0.5, what="8 nodes ready", detail=lambda: states)
    seen: list[dict[str, object]] = []

    def all_ready() -> list[dict[str, object]]:  # what the CLI shows (at once, unless a node flapped)
        seen[:] = nodes_json(address)
        return seen if len(seen) >= 8 and all(n["state"] == "ready" for n in seen) else []

    eventually(all_ready, timeout=60, interval=0.5, what="8 nodes ready (CLI)", detail=lambda: seen)
    nodes = seen
    assert len(nodes) >= 8, nodes
    assert all(n["state"] == "ready" for n in nodes), [(n["id"], n["state"]) for n in nodes]
    assert {n["vendor"] for n in nodes} == {"nvidia", "ascend", "biren", "metax"}
    for node in nodes:
        assert set(node) >= REQUIRED_KEYS, node
        assert isinstance(node["device_count"], int) and node["device_count"] > 0
        assert isinstance(node["memory_gib"], float)
        assert node["leased"] == (node["lease_expires_at"] is not None)
    assert any(n["leased"] for n in nodes) and not all(n["leased"] for n in nodes)


def test_cli_cordon_and_errors(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, _, _ = embedded
    done = tokenfab("cordon", "cn-east-br104-01", "--reason", "test", address=address)
    assert "cordoned (state cordoned)" in done.stdout
    states = {n["id"]: n["state"] for n in nodes_json(address)}
    assert states["cn-east-br104-01"] == "cordoned"
    assert "uncordoned (state ready)" in tokenfab("uncordon", "cn-east-br104-01", address=address).stdout
    missing = tokenfab("cordon", "no-such-node", address=address, check=False)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    table = tokenfab("nodes", address=address)
    assert "cn-north-h100-01" in table.stdout and "ready" in table.stdout
    down = tokenfab("nodes", address=f"127.0.0.1:{free_port()}", check=False)
    assert down.returncode == 3 and "UNAVAILABLE" in down.stderr


def _cli(address: str, state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENFAB_STATE_DIR": str(state)}  # the CLI finds the demo token there
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", *args, "--address", address],
        capture_output=True, text=True, timeout=60, env=env, check=check,
    )  # fmt: skip


def _wait_for(what: str, probe: Any, timeout_s: float, state: Path, interval: float = 1.0) -> Any:
    """``eventually`` at the CLI's pace (each probe runs CLI processes), with the tail of up's log."""
    return eventually(
        probe,
        timeout=timeout_s,
        interval=interval,
        what=what,
        detail=lambda: (state / "up.log").read_text()[-3000:],
    )


def test_the_sample_request_serves_on_two_vendors(
    embedded: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    address, _, state = embedded

    def polled() -> bool:
        ready = [r for r in demo(address, state).replicas() or [] if r.state == "Ready"]
        return len({r.vendor for r in ready}) >= 2 and all(r.output_tokens_per_second > 0 for r in ready)

    _wait_for("sample request Ready on two vendors with live tokens/s (polled)", polled, 240, state, 0.5)

    def serving() -> list[dict[str, Any]]:
        requests = json.loads(_cli(address, state, "request", "list", "-o", "json").stdout)
        replicas = json.loads(_cli(address, state, "replicas", "-o", "json").stdout)
        if not requests or requests[0]["phase"] != "Ready":
            return []
        ready = [r for r in replicas if r["request"] == requests[0]["id"] and r["state"] == "Ready"]
        if len({r["vendor"] for r in ready}) < 2 or not all(r["output_tokens_per_second"] > 0 for r in ready):
            return []
        return ready

    ready = _wait_for("sample request Ready on two vendors with live tokens/s", serving, 240, state)
    assert all(r["endpoint"].startswith("http://127.0.0.1:") and r["actor_id"] for r in ready)
    assert any(r["tensor_parallel"] > 1 for r in ready), "the 72B sample runs as tensor-parallel gangs"
    # the tenant's one endpoint: the gateway, with the demo token (the demo's load goes there too)
    sample = json.loads(_cli(address, state, "request", "list", "-o", "json").stdout)[0]
    assert sample["endpoint"].startswith("http://127.0.0.1:") and sample["endpoint"].endswith("/v1")
    call = urllib.request.Request(
        sample["endpoint"] + "/completions",
        data=json.dumps({"model": sample["model"], "prompt": "hi", "max_tokens": 4}).encode(),
        headers={"Authorization": f"Bearer {(state / 'demo-token').read_text().strip()}"},
    )
    with urllib.request.urlopen(call, timeout=60) as reply:
        assert json.loads(reply.read())["usage"]["completion_tokens"] == 4


def test_capacity_requests_through_the_cli(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, _, state = embedded

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _cli(address, state, "request", *args, check=check)

    created = json.loads(
        cli("create", "--model", "qwen2.5-7b-instruct", "--output-tokens-per-second", "20000",
            "--ttft-p95-ms", "1000", "--tpot-p95-ms", "50", "-o", "json").stdout
    )  # fmt: skip
    request_id = created["id"]
    assert request_id.startswith("cr-")

    polled = demo(address, state)
    _wait_for(f"{request_id} Ready (polled)", lambda: polled.phase(request_id) == "Ready", 240, state, 0.3)

    def ready() -> dict[str, Any] | None:
        got: dict[str, Any] = json.loads(cli("get", request_id, "-o", "json").stdout)
        return got if got["phase"] == "Ready" else None

    got = _wait_for(f"{request_id} Ready", ready, 240, state)
    assert got["predicted_output_tokens_per_second"] >= 20000
    assert got["ready_output_tokens_per_second"] >= 20000
    assert got["replicas"] and all(r["accelerator"] and r["node"] and r["devices"] for r in got["replicas"])
    assert all(r["state"] == "Ready" for r in got["replicas"])
    listed = json.loads(_cli(address, state, "replicas", "--request", request_id, "-o", "json").stdout)
    assert {r["id"] for r in listed} == {r["id"] for r in got["replicas"]}
    for replica in listed:
        assert {"id", "request", "model", "vendor", "accelerator", "node", "devices", "state"} <= set(replica)
        assert replica["request"] == request_id and replica["model"] == "qwen2.5-7b-instruct"
    bad = cli("create", "--model", "nope", "--output-tokens-per-second", "5", check=False)
    assert bad.returncode == 2 and "spec.model" in bad.stderr
    assert json.loads(cli("cancel", request_id, "-o", "json").stdout)["phase"] == "Cancelled"
    _wait_for(
        f"{request_id}'s replicas stopped (polled)", lambda: polled.replicas(request_id) == [], 60, state, 0.3
    )

    def drained() -> bool:
        left = json.loads(_cli(address, state, "replicas", "--request", request_id, "-o", "json").stdout)
        return not left

    _wait_for(f"{request_id}'s replicas stopped", drained, 60, state)


def test_the_demo_refuses_callers_without_the_right_credentials(
    embedded: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    """mTLS and tokens with no step for the user: the state dir's credentials work; nothing else."""
    address, _, state = embedded
    assert (state / "pki" / "ca.crt").exists() and (state / "admin-token").stat().st_mode & 0o077 == 0
    cli = [sys.executable, "-m", "controlplane.cli.main"]
    elsewhere = {**os.environ, "TOKENFAB_STATE_DIR": str(tmp_path)}  # no credentials at all
    for args in (["drain", "cn-east-br104-01"], ["autoscaler", "mode", "off"], ["nodes"]):
        done = subprocess.run([*cli, *args, "--address", address], capture_output=True, text=True,
                              timeout=60, env=elsewhere, check=False)  # fmt: skip
        assert done.returncode == 3 and "UNAVAILABLE" in done.stderr, done.stderr  # no client certificate
    tenant = {
        **os.environ,
        "TOKENFAB_STATE_DIR": str(state),
        "TOKENFAB_TOKEN": (state / "demo-token").read_text(),
    }
    for args, method in ((["drain", "cn-east-br104-01"], "FleetService/Drain"),
                         (["autoscaler", "mode", "off"], "AutoscalerService/SetMode")):  # fmt: skip
        done = subprocess.run([*cli, *args, "--address", address], capture_output=True, text=True,
                              timeout=60, env=tenant, check=False)  # fmt: skip
        assert done.returncode == 2 and "PERMISSION_DENIED" in done.stderr, done.stderr
        assert "tenant/demo" in done.stderr and method in done.stderr
    audit = json.loads(
        tokenfab("audit", "--result", "PERMISSION_DENIED", "-o", "json", address=address).stdout
    )
    assert {"FleetService/Drain", "AutoscalerService/SetMode"} <= {a["method"] for a in audit}
    assert all(a["principal"] == "tenant/demo" for a in audit)


def test_sigterm_stops_everything_cleanly(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, proc, state = embedded
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    log = (state / "up.log").read_text()
    assert '"up.stopped"' in log
    for marker in (str(state), str(ray_temp_root(state))):
        leftovers = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
        assert leftovers.stdout.strip() == "", f"processes left behind ({marker}): {leftovers.stdout}"
    assert nodes_json(address) == []  # nothing listens any more
