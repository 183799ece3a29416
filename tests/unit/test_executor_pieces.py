"""Pure pieces of the executor side: the raylet command, metric scraping, visible devices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agents.raylet import RayletSpec
from controlplane.executor.enginestats import EngineExporter, Scraper, _quantile
from tokenfab.accelerators import visible_devices_env


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
