"""``tokenfab agent discover`` and the path from discovery to registration, on real captures.

The vendor tools are replaced by their captured output (``run_tool`` is patched in-process:
unit tests start no processes); everything after the tool's output is the real code: the agent's
backend selection, the parsers, the report, the CLI and the control plane's registration model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from agents.discovery import ascend as ascend_mod
from agents.discovery import metax as metax_mod
from agents.discovery import nvidia as nvidia_mod
from agents.discovery.base import MiB, NotPresent
from agents.discovery.nvidia import parse_nvidia_smi_csv
from agents.runtime import Agent, NodeIdentity
from controlplane.api.convert import registration_from_pb
from controlplane.cli.main import app
from controlplane.domain.nodes import NodeRegistration, validation_message
from tests.conftest import FIXTURES

DATA = FIXTURES / "discovery"
runner = CliRunner()


def read(name: str) -> str:
    return (DATA / name).read_text()


def tools(monkeypatch: pytest.MonkeyPatch, module: Any, outputs: dict[tuple[str, ...], str]) -> None:
    def run(argv: list[str], **_: object) -> str:
        key = tuple(argv)
        if key not in outputs:
            raise NotPresent(f"{argv[0]} not found on PATH")
        return outputs[key]

    monkeypatch.setattr(module, "run_tool", run)


def discover_json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["agent", "discover", *args, "-o", "json"])
    return result.exit_code, (json.loads(result.stdout) if result.exit_code == 0 else {}), result.output


def test_discover_ht_smi_node(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, metax_mod, {("ht-smi",): read("ht-smi-2.2.9-x201x8.txt")})
    code, report, _ = discover_json("--backend", "metax")
    assert code == 0
    assert set(report) == {"backend", "accelerator", "devices"}
    assert (report["backend"], report["accelerator"]) == ("metax", "X201")
    assert len(report["devices"]) == 8
    assert report["devices"][7] == {
        "index": 7, "uuid": "metax-0000:cf:00.0", "model": "X201", "memory_mib": 65536,
        "health": "healthy", "reason": "",
    }  # fmt: skip


def test_discover_a3_node_with_process_table(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(
        monkeypatch,
        ascend_mod,
        {("npu-smi", "info"): read("npu-smi-info-a3-25.2.0-vllm-ascend-3002.txt"),
         ("npu-smi", "info", "-m"): read("npu-smi-info-m-a3-xllm-test.txt")},
    )  # fmt: skip
    code, report, _ = discover_json("--backend", "ascend")
    assert code == 0 and report["accelerator"] == "910C"
    assert [d["index"] for d in report["devices"][:3]] == [0, 1, 2]  # logical ids from the map
    assert len(report["devices"]) == 16


def test_discover_gb10_reports_the_unhealthy_gpu_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML is not loadable here (NotPresent), so discovery takes the nvidia-smi path."""
    tools(monkeypatch, nvidia_mod, {tuple(nvidia_mod.SMI_COMMAND): read("nvidia-smi-query-gb10-unsloth.csv")})
    code, report, _ = discover_json("--backend", "nvidia")
    assert code == 0
    [gpu] = report["devices"]
    assert (gpu["model"], gpu["memory_mib"], gpu["health"]) == ("GB10", 0, "unhealthy")
    assert "memory.total not reported" in gpu["reason"]


def test_discover_table_output(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, metax_mod, {("mx-smi",): read("mx-smi-2.3.1-c500.txt")})
    result = runner.invoke(app, ["agent", "discover", "--backend", "metax"])
    assert result.exit_code == 0
    assert "metax-0000:12:00.0" in result.output and "C500" in result.output


def test_discover_tool_present_but_unreadable_exits_3_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, metax_mod, {("mx-smi",): "mx-smi  version: 2.3.1\n\nmxsml init failed\n"})
    code, _, output = discover_json("--backend", "metax")
    assert code == 3
    assert "no GPU table header" in output and "not found" not in output


def test_discover_auto_with_a_broken_tool_is_not_reported_as_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    tools(monkeypatch, ascend_mod, {("npu-smi", "info"): "dcmi module initialize failed. ret is -8005\n"})
    code, _, output = discover_json()
    assert code == 3
    assert "a vendor tool is present but no device could be read" in output
    assert "ascend: npu-smi info: no 'NPU Name | Health' table header" in output


def test_discover_bad_backend_name_exits_2() -> None:
    code, _, output = discover_json("--backend", "intel")
    assert code == 2 and "backend" in output


def test_agent_command_still_takes_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tokenfab agent --backend ... --node ...`` (tokenfab up, the tests, the Helm chart) runs
    the agent exactly as before; ``discover`` is a subcommand next to it."""
    seen: list[Any] = []

    def run_agent(options: Any) -> tuple[int, str]:
        seen.append(options)
        return 0, ""

    monkeypatch.setattr("agents.main.run_agent", run_agent)
    monkeypatch.setattr("tokenfab.logs.configure", lambda **_: None)  # keep logs off the runner's stream
    result = runner.invoke(
        app,
        [
            "agent",
            "--backend=simulated",
            "--node=cn-north-h100-01",
            "--address=127.0.0.1:1",
            "--log-format",
            "console",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [(o.backend, o.node_id, o.address) for o in seen] == [
        ("simulated", "cn-north-h100-01", "127.0.0.1:1")
    ]
    help_text = runner.invoke(app, ["agent", "--help"]).output
    assert "discover" in help_text and "--backend" in help_text


def test_isolated_device_registers_unhealthy_with_its_reason() -> None:
    """The agent's registration of a real GB10 capture plus a real H100 row: the control plane
    accepts the node, with the GB10 unhealthy (memory unknown) and the H100 healthy."""
    rows = parse_nvidia_smi_csv(
        read("nvidia-smi-query-gb10-unsloth.csv") + "1, NVIDIA H100 80GB HBM3, 81559, 81081\n"
    )
    agent = Agent(
        backend=nvidia_mod.NvidiaSmiBackend(),
        identity=NodeIdentity("spark-01", "default"),
        address="127.0.0.1:1",
        devices=[d for d, _ in rows],
    )
    registration = registration_from_pb(agent.registration())
    assert [(d.index, d.health.value, d.memory_bytes) for d in registration.devices] == [
        (0, "unhealthy", 0),
        (1, "healthy", 81559 * MiB),
    ]
    assert "memory.total not reported" in registration.devices[0].health_reason


def test_unknown_memory_is_refused_for_a_healthy_device() -> None:
    data = {
        "node_id": "n1", "cluster": "c", "vendor": "nvidia",
        "devices": [{"uuid": "GPU-0", "index": 0, "model": "GB10", "memory_bytes": 0}],
    }  # fmt: skip
    with pytest.raises(ValidationError) as info:
        NodeRegistration.model_validate(data)
    field, message = validation_message(info.value)
    assert field == "devices[0].memory_bytes" and "unhealthy" in message


def test_a_tool_failing_mid_run_makes_devices_unhealthy_not_the_session_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registered from a real capture, then npu-smi starts printing an error: the next beat
    reports every chip unhealthy with the reason instead of raising (which would end the
    session and make the agent reconnect in a loop)."""
    tools(monkeypatch, ascend_mod, {("npu-smi", "info"): read("npu-smi-info-310p3-duo-25.2.0-nvtop-421.txt")})
    backend = ascend_mod.AscendBackend()
    agent = Agent(
        backend, NodeIdentity("duo-01", "default"), address="127.0.0.1:1", devices=backend.discover()
    )
    assert [s.health for s in agent.sample()] == ["healthy", "healthy"]
    tools(monkeypatch, ascend_mod, {("npu-smi", "info"): "dcmi module initialize failed. ret is -8005\n"})
    samples = agent.sample()
    assert [(s.index, s.health) for s in samples] == [(0, "unhealthy"), (1, "unhealthy")]
    assert "no 'NPU Name | Health' table header" in samples[0].health_reason
