"""Pure pieces of the executor side: the raylet command, metric scraping, visible devices, and the
executor's own expansion of launches (the allowlist)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path

import pytest

from agents.raylet import RayletSpec
from controlplane.catalog.types import load_catalog
from controlplane.errors import InvalidArgument
from controlplane.executor.enginestats import EngineExporter, Scraper, _quantile
from controlplane.executor.expand import EngineConfig, expand_process, launch_env, log_path
from tokenfab.accelerators import visible_devices_env
from tokenfab.v1 import executor_pb2


def spec(vendor: str, accelerator: str) -> RayletSpec:
    return RayletSpec("127.0.0.1:6379", "n1", "c1", vendor, accelerator, 4, Path("/tmp/x"))


@pytest.mark.parametrize(
    ("vendor", "accelerator", "gpus", "custom"),
    [
        ("nvidia", "H100", "4", {}),
        ("metax", "C500", "4", {}),
        ("ascend", "910B3", "0", {"NPU": 4.0}),
        ("biren", "BR104", "0", {"biren_gpu": 4.0}),
    ],
)
def test_raylet_offers_the_vendors_ray_resource_and_labels(
    vendor: str, accelerator: str, gpus: str, custom: dict[str, float]
) -> None:
    argv = spec(vendor, accelerator).argv()
    assert argv[1:3] == ["start", "--address"] and "--block" in argv
    # no log monitor: the executor, the only driver, runs with log_to_driver off
    assert argv[argv.index("--include-log-monitor") + 1] == "false"
    assert argv[argv.index("--num-gpus") + 1] == gpus
    resources = json.loads(argv[argv.index("--resources") + 1])
    assert resources == {f"accelerator_type:{accelerator}": 1.0, **custom}
    labels = dict(pair.split("=") for pair in argv[argv.index("--labels") + 1].split(","))
    assert labels == {
        "tokenfab.io/node": "n1",
        "tokenfab.io/vendor": vendor,
        "tokenfab.io/accelerator": accelerator,
        "tokenfab.io/cluster": "c1",
    }
    assert argv[argv.index("--temp-dir") + 1] == "/tmp/x"


def test_visible_devices_switch_off_rays_override_where_ray_has_one() -> None:
    assert visible_devices_env("nvidia", [2, 3]) == {
        "CUDA_VISIBLE_DEVICES": "2,3",
        "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",
    }
    assert visible_devices_env("biren", [0]) == {"SUPA_VISIBLE_DEVICES": "0"}  # Ray does not manage Biren


def test_quantile_interpolates_within_buckets() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, math.inf: 20.0}
    assert _quantile(0.5, buckets) == pytest.approx(0.1)
    assert _quantile(0.75, buckets) == pytest.approx(0.15)
    assert math.isnan(_quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def test_scraper_turns_the_exporters_page_into_rates_and_percentiles() -> None:
    exporter = EngineExporter("m")
    scraper = Scraper(window_s=10.0)
    labels = {"model_name": "m"}
    first = scraper.update(exporter.page().decode(), now=100.0)
    assert first.output_tokens_per_second == 0.0 and math.isnan(first.tpot_p95_s)
    exporter.generated.labels(**labels).inc(5000)
    exporter.prompt.labels(**labels).inc(20000)
    exporter.running.labels(**labels).set(12)
    exporter.waiting.labels(**labels).set(3)
    exporter.kv.labels(**labels).set(0.42)
    for _ in range(95):
        exporter.tpot.labels(**labels).observe(0.02)
    for _ in range(5):
        exporter.tpot.labels(**labels).observe(0.3)
    stats = scraper.update(exporter.page().decode(), now=110.0)
    assert stats.output_tokens_per_second == pytest.approx(500.0)
    assert stats.input_tokens_per_second == pytest.approx(2000.0)
    assert (stats.running, stats.waiting, stats.kv_cache_usage) == (12, 3, pytest.approx(0.42))
    assert 0.01 < stats.tpot_p50_s <= 0.025
    assert stats.tpot_p95_s <= 0.025  # 95 of 100 under 25 ms
    for _ in range(20):
        exporter.tpot.labels(**labels).observe(0.3)
    later = scraper.update(exporter.page().decode(), now=120.0)  # window: the last 10 s only
    assert later.tpot_p95_s > 0.25 and later.output_tokens_per_second == 0.0


def test_scraper_reads_older_vllm_cache_gauge() -> None:
    page = '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name="m"} 0.7\n'
    assert Scraper().update(page, now=1.0).kv_cache_usage == pytest.approx(0.7)


# -- the executor expands launches itself: nothing from the wire becomes a command or a path --


def launch(**over: object) -> executor_pb2.ReplicaLaunch:
    fields: dict[str, object] = {
        "replica_id": "cr-1-r1", "request_id": "cr-1", "generation": 3, "model": "qwen2.5-7b-instruct",
        "vendor": "nvidia", "accelerator": "H100", "node_id": "gpu-1", "devices": [2], "tensor_parallel": 1,
        "engine": "vllm", "resources": {"GPU": 1.0},
        "process": executor_pb2.ProcessEngine(dtype="bf16", port=18002, ready_timeout_s=60),
    }  # fmt: skip
    return executor_pb2.ReplicaLaunch(**(fields | over))  # type: ignore[arg-type]


def test_the_executor_builds_the_command_and_the_environment() -> None:
    config = EngineConfig(load_catalog())
    command = expand_process(launch(), config)
    assert command.argv[:3] == ("vllm", "serve", "Qwen/Qwen2.5-7B-Instruct")
    assert command.argv[command.argv.index("--port") + 1] == "18002"
    env = launch_env(launch())
    assert env == {
        "CUDA_VISIBLE_DEVICES": "2", "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",
        "TOKENFAB_NODE_ID": "gpu-1", "TOKENFAB_REPLICA_ID": "cr-1-r1", "TOKENFAB_GENERATION": "3",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"replica_id": "../../etc/passwd"}, "launch.replica_id"),
        ({"replica_id": "x/y"}, "launch.replica_id"),
        ({"replica_id": ""}, "launch.replica_id"),
        ({"node_id": "a b"}, "launch.node_id"),
        ({"engine": "bash"}, "launch.engine"),
        ({"model": "rm -rf /"}, "launch.model"),
        ({"accelerator": "910B3"}, "launch.vendor"),  # an Ascend part named on an NVIDIA launch
        ({"resources": {"GPU": 1.0, "memory": 1e12}}, "launch.resources"),
        ({"devices": [1, 1], "tensor_parallel": 2}, "launch.devices"),
        (
            {"process": executor_pb2.ProcessEngine(dtype="bf16", port=22, ready_timeout_s=60)},
            "launch.process",
        ),
        (
            {"process": executor_pb2.ProcessEngine(dtype="exec", port=18002, ready_timeout_s=60)},
            "launch.process.dtype",
        ),
    ],
)
def test_a_launch_outside_the_allowlist_is_refused_naming_the_field(
    over: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        expand_process(launch(**over), EngineConfig(load_catalog()))
    assert info.value.field == field


def test_an_engine_without_an_operator_template_cannot_start() -> None:
    ascend = launch(vendor="ascend", accelerator="910B3", engine="mindie", resources={"NPU": 1.0})
    with pytest.raises(InvalidArgument, match="template"):
        expand_process(ascend, EngineConfig(load_catalog()))
    configured = EngineConfig(load_catalog(), templates={"mindie": "mindie-server --port {port} --tp {tp}"})
    assert expand_process(ascend, configured).argv[:2] == ("mindie-server", "--port")


def test_log_files_stay_in_the_log_directory(tmp_path: Path) -> None:
    assert log_path(str(tmp_path), "cr-1-r1") == str(tmp_path.resolve() / "cr-1-r1.log")
    for bad in ("../x", "a/../../b", "/etc/passwd", ".hidden", ""):
        with pytest.raises(InvalidArgument):
            log_path(str(tmp_path), bad)


async def test_connecting_returns_once_connected_and_raises_what_the_connect_raised() -> None:
    from controlplane.executor.service import connect_unless_stopped

    calls: list[str] = []
    assert await connect_unless_stopped(lambda: calls.append("connected"), asyncio.Event()) is True
    assert calls == ["connected"]

    def refused() -> None:
        raise ConnectionError("ray: nothing listens")

    with pytest.raises(ConnectionError, match="nothing listens"):
        await connect_unless_stopped(refused, asyncio.Event())


async def test_a_stop_ends_the_wait_for_a_connect_that_hangs() -> None:
    from controlplane.executor.service import connect_unless_stopped

    release = threading.Event()
    stop = asyncio.Event()
    daemon: list[bool] = []

    def hangs() -> None:
        daemon.append(threading.current_thread().daemon)
        release.wait(60)

    waiting = asyncio.create_task(connect_unless_stopped(hangs, stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    stop.set()
    try:
        assert await waiting is False
        assert daemon == [True]  # left behind, never joined: the process can exit
    finally:
        release.set()


def test_a_stopping_agents_raylet_skips_rays_drain_unless_the_operator_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", raising=False)
    env = spec("nvidia", "H100").environment()
    assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"  # Tokenfab drains; the node goes at once
    assert env["TOKENFAB_RAY_NODE_IP"] == "127.0.0.1"
    monkeypatch.setenv("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "20")
    assert spec("nvidia", "H100").environment()["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "20"
