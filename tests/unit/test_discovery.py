"""Vendor parsers against fixtures in each tool's real output format (see fixtures/discovery/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.discovery import NotPresent, ToolFailed, backend_for, judge_health
from agents.discovery.ascend import AscendBackend, parse_chip_map, parse_npu_smi_info
from agents.discovery.base import MiB, normalise_model
from agents.discovery.biren import BirenBackend, count_cards, parse_brsmi_csv
from agents.discovery.metax import MetaxBackend, parse_mx_smi
from agents.discovery.nvidia import NvidiaSmiBackend, parse_nvidia_smi_csv
from tests.conftest import FIXTURES

DATA = FIXTURES / "discovery"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_nvidia_smi_h100() -> None:
    rows = parse_nvidia_smi_csv(read("nvidia-smi-h100x8.csv"))
    assert len(rows) == 8
    devices = [d for d, _ in rows]
    samples = {s.index: s for _, s in rows}
    assert {d.model for d in devices} == {"H100"}
    assert devices[0].memory_bytes == 81559 * MiB
    assert devices[0].uuid == "GPU-5a1c4f0e-3b7d-9c2e-8f41-6d0b2a9e7c11"
    assert devices[1].pci_bus_id == "00000000:2A:00.0"
    assert samples[0].utilization_percent == 97
    assert samples[0].temperature_celsius == 64
    assert (samples[3].health, samples[3].ecc_uncorrected_errors) == ("unhealthy", 2)
    assert samples[5].health == "degraded"
    assert "88" in samples[5].health_reason
    assert sum(s.health == "healthy" for s in samples.values()) == 6


def test_nvidia_smi_unsupported_fields() -> None:
    [(device, sample)] = parse_nvidia_smi_csv(read("nvidia-smi-rtx4090-na.csv"))
    assert device.model == "RTX4090"
    assert sample.ecc_uncorrected_errors == 0
    assert sample.health == "healthy"


def test_nvidia_smi_garbage_is_an_error_not_zero_gpus() -> None:
    with pytest.raises(ToolFailed):
        parse_nvidia_smi_csv(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        )


def test_npu_smi_910b3_with_chip_map() -> None:
    chip_map = parse_chip_map(read("npu-smi-info-m-910b3.txt"))
    assert chip_map[(1, 0)] == (1, "Ascend 910B3")
    assert (0, 1) not in chip_map
    rows = parse_npu_smi_info(read("npu-smi-info-910b3.txt"), chip_map)
    assert [d.index for d, _ in rows] == [0, 1, 2, 3]  # process table not mistaken for NPUs
    device, sample = rows[1]
    assert device.model == "910B3"
    assert device.memory_bytes == 65536 * MiB
    assert device.pci_bus_id == "0000:C2:00.0"
    assert device.uuid == "ascend-0000:c2:00.0"
    assert sample.memory_used_bytes == 61012 * MiB
    assert sample.utilization_percent == 87
    assert sample.temperature_celsius == 52
    assert [s.health for _, s in rows] == ["healthy", "healthy", "degraded", "unhealthy"]


def test_npu_smi_310p_uses_ddr_memory() -> None:
    [(device, sample)] = parse_npu_smi_info(read("npu-smi-info-310p3.txt"))
    assert device.model == "310P3"
    assert device.memory_bytes == 21527 * MiB
    assert sample.memory_used_bytes == 1782 * MiB
    assert sample.temperature_celsius == 46


@pytest.mark.parametrize(
    ("name", "model", "count", "used0"),
    [("mx-smi-c500-2.1.12.txt", "C500", 2, 48213), ("mx-smi-c550-2.2.4.txt", "C550", 2, 20480),
     ("mx-smi-c500-2.1.6.txt", "C500", 1, 60982)],
)  # fmt: skip
def test_mx_smi_versions(name: str, model: str, count: int, used0: int) -> None:
    rows = parse_mx_smi(read(name))
    assert len(rows) == count
    assert {d.model for d, _ in rows} == {model}
    assert rows[0][0].memory_bytes == 65536 * MiB
    assert rows[0][1].memory_used_bytes == used0 * MiB


def test_mx_smi_hot_device_is_degraded() -> None:
    rows = parse_mx_smi(read("mx-smi-c500-2.1.12.txt"))
    assert rows[0][1].utilization_percent == 37
    assert rows[0][1].health == "healthy"
    assert rows[1][1].health == "degraded"
    assert rows[1][1].temperature_celsius == 90


def test_brsmi_assumed_csv_and_defensive_failure() -> None:
    rows = parse_brsmi_csv(read("brsmi-assumed.csv"))
    assert [d.model for d, _ in rows] == ["BR104", "BR104"]
    assert rows[1][1].memory_used_bytes == 30112 * MiB
    with pytest.raises(ToolFailed):
        parse_brsmi_csv("+------ Biren SMI ------+\n| Card 0 | BR104 |\n")


def test_biren_counts_device_nodes(tmp_path: Path) -> None:
    for name in ("card_0", "card_1", "card_3", "ctrl"):
        (tmp_path / name).touch()
    devices = count_cards(tmp_path, model="BR100")
    assert [d.index for d in devices] == [0, 1, 3]
    assert devices[0].memory_bytes == 64 * 1024 * MiB
    with pytest.raises(NotPresent):
        count_cards(tmp_path / "missing", model="BR104")


def test_biren_backend_falls_back_and_notices_a_vanished_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for name in ("card_0", "card_1"):
        (tmp_path / name).touch()
    backend = BirenBackend(dev_dir=tmp_path)
    assert len(backend.discover()) == 2
    assert "brsmi" in backend.why_not[0]
    (tmp_path / "card_1").unlink()
    assert [s.health for s in backend.sample()] == ["healthy", "unhealthy"]


@pytest.mark.parametrize("backend", [NvidiaSmiBackend(), AscendBackend(), MetaxBackend()])
def test_missing_tools_report_not_present(
    backend: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NotPresent):
        backend.discover()  # type: ignore[attr-defined]


def test_backend_lookup() -> None:
    assert backend_for("metax").vendor == "metax"
    with pytest.raises(ValueError, match="backend"):
        backend_for("intel")


@pytest.mark.parametrize(
    ("raw", "model"),
    [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA H20", "H20"),
     ("MetaX C500", "C500"), ("MXC500", "C500"), ("Ascend 910B3", "910B3"), ("910B4", "910B4"), ("BR104", "BR104"), ("BR104P", "BR104P"), ("NVIDIA GeForce RTX 4090", "RTX4090"),
     ("NVIDIA L20", "L20")],
)  # fmt: skip
def test_model_names(raw: str, model: str) -> None:
    assert normalise_model(raw) == model


def test_health_rules() -> None:
    assert judge_health() == ("healthy", "")
    assert judge_health(ecc_uncorrected=1)[0] == "unhealthy"
    assert judge_health(xid_errors=1)[0] == "unhealthy"
    assert judge_health(vendor_status="Alarm")[0] == "unhealthy"
    assert judge_health(vendor_status="Warning")[0] == "degraded"
    assert judge_health(temperature_c=86)[0] == "degraded"
    assert judge_health(temperature_c=96)[0] == "unhealthy"
