"""Vendor parsers against real captures of each tool's output (provenance: fixtures/discovery/README.md).

Every item of issue 12 section 1 is exercised here on a real capture: the process table of
``npu-smi info`` with several named processes, the A3 layout (``Chip Phy-ID``) of the table and
of ``-m``, the Atlas 300I Duo whose two chips share a Bus-Id, a board printing Bus-Id ``NA``,
mx-smi 2.3.1's four-column table, ``ht-smi``, a GB10 printing ``[N/A]`` for memory.total, and one
model name whatever the source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.discovery import NotPresent, ToolFailed, backend_for, judge_health
from agents.discovery import ascend as ascend_mod
from agents.discovery import metax as metax_mod
from agents.discovery.ascend import (
    AscendBackend,
    ascend_model,
    capacity_mb,
    parse_chip_map,
    parse_npu_smi_info,
    parse_usages,
)
from agents.discovery.base import MiB, normalise_model, vendor_state
from agents.discovery.biren import BirenBackend, count_cards, parse_brsmi_csv
from agents.discovery.metax import MetaxBackend, parse_mx_smi
from agents.discovery.nvidia import NvidiaSmiBackend, parse_nvidia_smi_csv
from tests.conftest import FIXTURES

DATA = FIXTURES / "discovery"


def read(name: str) -> str:
    return (DATA / name).read_text()


# --- NVIDIA: nvidia-smi --query-gpu CSV, read by its header ------------------------------------


def test_nvidia_smi_full_query_h100_is_read_by_header() -> None:
    """212 columns with units (plain --format=csv): only the ones we need are used."""
    [(device, sample)] = parse_nvidia_smi_csv(read("nvidia-smi-query-h100-590.48.01.csv"))
    assert (device.index, device.model, device.memory_bytes) == (0, "H100", 81559 * MiB)
    assert device.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert device.pci_bus_id == "00000000:00:09.0"
    assert (sample.temperature_celsius, sample.utilization_percent) == (41, 0)
    assert (device.health, sample.health) == ("healthy", "healthy")


def test_nvidia_smi_l40s_under_load() -> None:
    [(device, sample)] = parse_nvidia_smi_csv(read("nvidia-smi-query-l40s-595.80.csv"))
    assert (device.model, device.memory_bytes) == ("L40S", 46068 * MiB)
    assert (sample.utilization_percent, sample.temperature_celsius) == (100, 63)
    assert sample.ecc_uncorrected_errors == 0 and sample.health == "healthy"


def test_nvidia_smi_gb10_na_memory_is_isolated_not_fatal() -> None:
    """GB10 prints [N/A] in memory.total: the GPU is reported unhealthy with the reason."""
    [(device, sample)] = parse_nvidia_smi_csv(read("nvidia-smi-query-gb10-unsloth.csv"))
    assert (device.index, device.model, device.memory_bytes) == (0, "GB10", 0)
    assert device.health == sample.health == "unhealthy"
    assert "memory.total not reported ([N/A])" in device.health_reason
    assert device.uuid == "nvidia-gpu0"  # no uuid column in this query: still a unique id


def test_nvidia_smi_one_bad_gpu_does_not_fail_the_others() -> None:
    """The H100 row and the GB10 row under one header (the columns of the GB10 capture, values
    of both real captures): the good GPU stays healthy, the bad one is isolated."""
    head = read("nvidia-smi-query-gb10-unsloth.csv").splitlines()
    h100 = "1, NVIDIA H100 80GB HBM3, 81559, 81081"
    rows = parse_nvidia_smi_csv("\n".join([*head, h100]))
    assert [(d.index, d.health) for d, _ in rows] == [(0, "unhealthy"), (1, "healthy")]


def test_nvidia_smi_garbage_is_an_error_not_zero_gpus() -> None:
    with pytest.raises(ToolFailed, match="no CSV header"):
        parse_nvidia_smi_csv(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        )
    with pytest.raises(ToolFailed):
        parse_nvidia_smi_csv("")


# --- Ascend: npu-smi info, -m, -t usages --------------------------------------------------------


def test_npu_smi_process_table_with_named_processes_is_skipped() -> None:
    """Eight NPUs, each running four named processes: the old positional parser read the process
    rows as NPU rows and failed the node ("no memory figures in '686'")."""
    chip_map = parse_chip_map(read("npu-smi-info-m-910a-24.1.rc2-gpustack.txt"))
    chips = parse_npu_smi_info(read("npu-smi-info-910a-24.1.rc2-gpustack.txt"), chip_map)
    assert [c.device.index for c in chips] == list(range(8))
    assert {c.device.model for c in chips} == {"910A"}  # 'xxx' in the table, 'Ascend 910A' in the map
    assert {c.device.memory_bytes for c in chips} == {32768 * MiB}  # HBM, not the DDR column
    assert [c.device.health for c in chips].count("degraded") == 2  # NPUs 3 and 7 print Warning
    assert chips[3].device.health_reason == "npu-smi health Warning"
    assert chips[0].sample.temperature_celsius == 42


def test_npu_smi_older_tool_version() -> None:
    chips = parse_npu_smi_info(read("npu-smi-info-910a-22.0.3.1-gpustack.txt"))
    assert [c.device.uuid for c in chips][:2] == ["ascend-0000:61:00.0", "ascend-0000:db:00.0"]
    assert {c.device.health for c in chips} == {"healthy"}


def test_npu_smi_atlas_a3_layout_and_chip_map() -> None:
    """A3: 'Chip Phy-ID' in the header, two dies per NPU, a process table with empty names."""
    chips = parse_npu_smi_info(read("npu-smi-info-a3-25.2.0-vllm-ascend-3002.txt"))
    assert len(chips) == 16
    assert [(c.npu_id, c.chip_id) for c in chips[:3]] == [(0, 0), (0, 1), (1, 0)]
    assert len({c.device.uuid for c in chips}) == 16
    assert {c.device.model for c in chips} == {"910C"}
    assert chips[1].device.memory_bytes == 65536 * MiB
    assert chips[1].sample.memory_used_bytes == 61625 * MiB
    assert chips[1].sample.utilization_percent == 7


def test_npu_smi_m_with_phy_id_column_gives_names_not_numbers() -> None:
    chip_map = parse_chip_map(read("npu-smi-info-m-a3-xllm-test.txt"))
    assert chip_map[(0, 1)].name == "Ascend910"  # the old parser said '1 Ascend910'
    assert (chip_map[(1, 0)].logic_id, chip_map[(1, 0)].phy_id) == (2, 2)
    assert (0, 2) not in chip_map  # the MCU has no logical id


def test_npu_smi_duo_chips_sharing_a_bus_id_get_unique_uuids() -> None:
    chips = parse_npu_smi_info(read("npu-smi-info-310p3-duo-25.2.0-nvtop-421.txt"))
    assert [c.device.uuid for c in chips] == ["ascend-0000:01:00.0-chip0", "ascend-0000:01:00.0-chip1"]
    assert [c.device.memory_bytes // MiB for c in chips] == [44280, 43693]  # DDR: 310P has no HBM
    assert {c.device.model for c in chips} == {"310P3"}


def test_npu_smi_duo_eight_chips_with_chip_map() -> None:
    chip_map = parse_chip_map(read("npu-smi-info-m-310p3-duo-gpustack.txt"))
    chips = parse_npu_smi_info(read("npu-smi-info-310p3-duo-25.5.1.txt"), chip_map)
    assert [c.device.index for c in chips] == list(range(8))
    assert len({c.device.uuid for c in chips}) == 8
    assert {c.device.model for c in chips} == {"310P3"}  # the map's 'Ascend xxx' is a placeholder


def test_npu_smi_bus_id_na_gives_an_id_from_npu_and_chip() -> None:
    [chip] = parse_npu_smi_info(read("npu-smi-info-310-21.0.3.1-na-busid.txt"))
    assert chip.device.uuid == "ascend-npu0-chip0"  # not 'ascend-na'
    assert chip.device.pci_bus_id == ""
    assert (chip.device.memory_bytes, chip.device.model) == (8192 * MiB, "310")  # no hugepages column


def test_npu_smi_310_with_device_column_and_minid_map() -> None:
    chip_map = parse_chip_map(read("npu-smi-info-m-310-21.0.4-gpustack.txt"))
    chips = parse_npu_smi_info(read("npu-smi-info-310-21.0.4-gpustack.txt"), chip_map)
    assert [c.device.index for c in chips] == [0, 1, 2, 3]
    assert {c.device.model for c in chips} == {"310"}  # numbered table name beats 'MiniD'
    assert chips[0].sample.temperature_celsius == 73


def test_npu_smi_unreadable_memory_isolates_the_chip() -> None:
    """One chip's memory cell of a real capture blanked: that chip is unhealthy, the rest fine."""
    text = read("npu-smi-info-310p3-duo-25.2.0-nvtop-421.txt").replace("1412 / 43693", "NA         ")
    chips = parse_npu_smi_info(text)
    assert [c.device.health for c in chips] == ["healthy", "unhealthy"]
    assert "no memory total" in chips[1].device.health_reason
    assert chips[1].device.memory_bytes == 0 and not chips[1].memory_known


def test_npu_smi_output_without_a_table_is_an_error() -> None:
    with pytest.raises(ToolFailed, match="no 'NPU Name"):
        parse_npu_smi_info("dcmi module initialize failed. ret is -8005\n")
    with pytest.raises(ToolFailed, match="NPU ID"):
        parse_chip_map("Error: permission denied\n")


def test_npu_smi_usages() -> None:
    one = parse_usages(read("npu-smi-info-t-usages-910b-25.5.1-telegraf.txt"))
    assert capacity_mb(one[0]) == 65536
    duo = parse_usages(read("npu-smi-info-t-usages-310p3-duo-gpustack.txt"))
    assert {chip: capacity_mb(f) for chip, f in duo.items()} == {0: 44280, 1: 43693}
    assert capacity_mb(parse_usages(read("npu-smi-info-t-usages-910b-gpustack.txt"))[0]) == 32768


def test_ascend_backend_completes_memory_from_usages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chip whose summary cell is unreadable gets its memory from ``-t usages``."""
    summary = read("npu-smi-info-310p3-duo-25.2.0-nvtop-421.txt").replace("1412 / 43693", "NA         ")
    outputs = {
        ("npu-smi", "info"): summary,
        ("npu-smi", "info", "-m"): "no mapping\n",
        ("npu-smi", "info", "-t", "usages", "-i", "2"): read("npu-smi-info-t-usages-310p3-duo-gpustack.txt"),
    }
    monkeypatch.setattr(ascend_mod, "run_tool", lambda argv, **_: outputs[tuple(argv)])
    devices = AscendBackend().discover()
    assert [(d.memory_bytes // MiB, d.health) for d in devices] == [(44280, "healthy"), (43693, "healthy")]


@pytest.mark.parametrize(
    ("table", "chip_map", "a3", "model"),
    [("Ascend910", "", True, "910C"), ("910B3", "Ascend 910B3", False, "910B3"),
     ("Ascend910", "Ascend 910B3", False, "910B3"), ("xxx", "Ascend 910A", False, "910A"),
     ("310", "MiniD", False, "310"), ("310P3", "Ascend xxx", False, "310P3")],
)  # fmt: skip
def test_one_ascend_model_whatever_the_source(table: str, chip_map: str, a3: bool, model: str) -> None:
    assert ascend_model(table, chip_map, a3_layout=a3) == model


# --- MetaX: mx-smi and ht-smi -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tool", "count", "model", "used0", "temp0"),
    [("mx-smi-2.1.6-mxc550x8-paddlenlp.txt", "mx-smi", 8, "C550", 810, 31),
     ("mx-smi-2.1.12-c550-t9k.txt", "mx-smi", 1, "C550", 858, 34),
     ("mx-smi-2.2.8-n260x2.txt", "mx-smi", 2, "N260", 666, 37),
     ("mx-smi-2.3.1-c500.txt", "mx-smi", 1, "C500", 826, 32),
     ("ht-smi-2.2.4-x201.txt", "ht-smi", 1, "X201", 831, 43),
     ("ht-smi-2.2.9-x201x8.txt", "ht-smi", 8, "X201", 858, 34),
     ("ht-smi-2.3.1-x201.txt", "ht-smi", 1, "X201", 858, 44)],
)  # fmt: skip
def test_mx_smi_and_ht_smi_versions(
    name: str, tool: str, count: int, model: str, used0: int, temp0: int
) -> None:
    rows = parse_mx_smi(read(name), tool=tool)
    assert len(rows) == count
    assert [d.index for d, _ in rows] == list(range(count))
    assert {d.model for d, _ in rows} == {model}
    assert {d.memory_bytes for d, _ in rows} == {65536 * MiB}
    assert len({d.uuid for d, _ in rows}) == count
    assert rows[0][1].memory_used_bytes == used0 * MiB
    assert rows[0][1].temperature_celsius == temp0
    assert {d.health for d, _ in rows} == {"healthy"}  # process tables and banners skipped


def test_mx_smi_2_3_1_four_column_table_is_found() -> None:
    [(device, sample)] = parse_mx_smi(read("mx-smi-2.3.1-c500.txt"))
    assert (device.uuid, device.pci_bus_id) == ("metax-0000:12:00.0", "0000:12:00.0")
    assert sample.utilization_percent == 0


def test_mx_smi_unknown_gpu_state_is_unhealthy() -> None:
    """No public capture shows a state other than Available; this is the real 2.2.8 capture with
    GPU 0's state word replaced, to show that an unknown word is never healthy."""
    text = read("mx-smi-2.2.8-n260x2.txt").replace("| Available            |", "| Unavailable          |", 1)
    rows = parse_mx_smi(text)
    assert [d.health for d, _ in rows] == ["unhealthy", "healthy"]
    assert rows[0][0].health_reason == "unknown mx-smi GPU-State 'Unavailable'"


def test_mx_smi_without_a_gpu_table_fails_loudly() -> None:
    with pytest.raises(ToolFailed, match="mx-smi: no GPU table header"):
        parse_mx_smi("mx-smi  version: 2.3.1\n\nfailed to initialize mxsml\n")


def test_metax_backend_falls_back_to_ht_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    def tool(argv: list[str], **_: object) -> str:
        if argv[0] == "mx-smi":
            raise NotPresent("mx-smi not found on PATH")
        return read("ht-smi-2.2.9-x201x8.txt")

    monkeypatch.setattr(metax_mod, "run_tool", tool)
    backend = MetaxBackend()
    assert len(backend.discover()) == 8 and backend.tool == "ht-smi"


def test_metax_tool_present_but_no_gpu_is_tool_failed_not_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        metax_mod, "run_tool", lambda argv, **_: "mx-smi  version: 2.3.1\n\nNo device found\n"
    )
    with pytest.raises(ToolFailed):
        MetaxBackend().discover()


# --- Biren (assumed format), health rules, lookup -----------------------------------------------


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
     ("NVIDIA GB10", "GB10"), ("NVIDIA L40S", "L40S"), ("MetaX C500", "C500"), ("MXC500", "C500"),
     ("MXC550", "C550"), ("MXC600-A", "C600"), ("Mars X201", "X201"), ("MetaX N260", "N260"),
     ("Ascend 910B3", "910B3"), ("Ascend910B3", "910B3"), ("Ascend910", "910"), ("910B4", "910B4"),
     ("BR104", "BR104"), ("BR104P", "BR104P"), ("NVIDIA GeForce RTX 4090", "RTX4090"),
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
    assert judge_health(vendor_status="UNKNOWN") == ("unhealthy", "unknown vendor state 'UNKNOWN'")
    assert judge_health(temperature_c=86)[0] == "degraded"
    assert judge_health(temperature_c=96)[0] == "unhealthy"
    assert judge_health(temperature_c=96, vendor_status="Warning")[0] == "unhealthy"


def test_unknown_vendor_state_is_never_healthy() -> None:
    assert vendor_state("Available", healthy=["Available"]) == ("healthy", "")
    assert vendor_state("", healthy=["Available"])[0] == "unhealthy"
    assert vendor_state("Busy", healthy=["Available"], what="GPU-State") == (
        "unhealthy",
        "unknown GPU-State 'Busy'",
    )
