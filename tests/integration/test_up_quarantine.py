"""`tokenfab up` starts even when its own sample request no longer loads from etcd: the record is
quarantined (shown as Invalid), the rest of the system runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aetcd

from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.embedded.up import SAMPLE_KEY, remembered_ports
from controlplane.store import keys
from tests.integration.conftest import eventually

FLEET = """\
nodes:
  - id: quar-h100-01
    cluster: quar
    region: test
    vendor: nvidia
    model: H100
    devices: 2
    memory_gib: 80
"""


async def seed_broken_sample(state: Path) -> None:
    """The state dir's etcd holds a sample request that fails validation (as an older version
    with looser checks could have stored it)."""
    client_port, peer_port = remembered_ports(state)
    etcd = EtcdProcess(
        state / "etcd", client_port=client_port, peer_port=peer_port, log_file=state / "seed.log"
    )
    await etcd.start()
    try:
        async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
            digest = hashlib.sha256(SAMPLE_KEY.encode()).hexdigest()
            await client.put(keys.capacity_idempotency("demo", digest).encode(), b"cr-broken")
            broken = {"id": "cr-broken", "tenant": "demo", "spec": {"model": "qwen2.5-72b-instruct"}}
            await client.put(keys.capacity_request("cr-broken").encode(), json.dumps(broken).encode())
    finally:
        etcd.stop()


def test_up_runs_past_a_sample_that_does_not_load(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    asyncio.run(seed_broken_sample(state))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.main", "up", "--headless", "--address", address,
             "--state-dir", str(state), "--fleet", str(fleet), "--metrics-address", f"127.0.0.1:{free_port()}",
             "--gateway-address", f"127.0.0.1:{free_port()}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def started() -> bool:
            assert up.poll() is None, f"up exited: {log_path.read_text()[-3000:]}"
            return '"up.started"' in log_path.read_text()

        eventually(
            started, timeout=300, interval=0.5, what="up.started", detail=lambda: log_path.read_text()[-3000:]
        )
        text = log_path.read_text()
        assert '"up.sample_unavailable"' in text and "is Invalid" in text
        env = {**os.environ, "TOKENFAB_STATE_DIR": str(state)}
        listed = subprocess.run(
            [sys.executable, "-m", "controlplane.cli.main", "request", "list", "-o", "json", "--address", address],
            capture_output=True, text=True, timeout=60, env=env, check=True,
        )  # fmt: skip
        assert [(r["id"], r["phase"]) for r in json.loads(listed.stdout)] == [("cr-broken", "Invalid")]
        nodes = subprocess.run(
            [sys.executable, "-m", "controlplane.cli.main", "nodes", "-o", "json", "--address", address],
            capture_output=True, text=True, timeout=60, env=env, check=True,
        )  # fmt: skip
        assert [n["id"] for n in json.loads(nodes.stdout)] == ["quar-h100-01"]
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
