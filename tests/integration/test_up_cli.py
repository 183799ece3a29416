"""`tokenfab up --headless` as a user runs it, and the CLI against it.

One embedded run per module: a real etcd child, the control plane and ten agent processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.embedded.etcd import free_port

REQUIRED_KEYS = {"id", "cluster", "vendor", "accelerator", "device_count", "memory_gib", "state", "leased",
                 "lease_expires_at"}  # fmt: skip


def tokenfab(*args: str, address: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENFAB_ADDRESS": address}
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


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    state = tmp_path_factory.mktemp("up")
    address = f"127.0.0.1:{free_port()}"
    log = (state / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli.main", "up", "--headless", "--address", address,
         "--state-dir", str(state), "--metrics-address", f"127.0.0.1:{free_port()}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield address, proc, state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_up_brings_the_fleet_to_ready(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, proc, state = embedded
    deadline = time.monotonic() + 60
    nodes: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        nodes = nodes_json(address)
        if len(nodes) >= 8 and all(n["state"] == "ready" for n in nodes):
            break
        assert proc.poll() is None, (state / "up.log").read_text()[-2000:]
        time.sleep(0.5)
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


def test_capacity_requests_through_the_cli(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, _, state = embedded
    env_state = {"TOKENFAB_STATE_DIR": str(state)}  # the CLI finds the demo token there

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controlplane.cli.main", "request", *args, "--address", address],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env_state}, check=check,
        )  # fmt: skip

    created = json.loads(
        cli("create", "--model", "qwen2.5-7b-instruct", "--output-tokens-per-second", "20000",
            "--ttft-p95-ms", "1000", "--tpot-p95-ms", "50", "-o", "json").stdout
    )  # fmt: skip
    assert created["id"].startswith("cr-")
    got = json.loads(cli("get", created["id"], "-o", "json").stdout)
    assert got["phase"] == "Pending"
    assert got["predicted_output_tokens_per_second"] >= 20000
    assert got["replicas"] and all(r["accelerator"] and r["node"] and r["devices"] for r in got["replicas"])
    bad = cli("create", "--model", "nope", "--output-tokens-per-second", "5", check=False)
    assert bad.returncode == 2 and "spec.model" in bad.stderr
    assert json.loads(cli("cancel", created["id"], "-o", "json").stdout)["phase"] == "Cancelled"


def test_sigterm_stops_everything_cleanly(embedded: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    address, proc, state = embedded
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = (state / "up.log").read_text()
    assert '"up.stopped"' in log
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
    assert nodes_json(address) == []  # nothing listens any more
