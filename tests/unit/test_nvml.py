"""NVML backend. No GPU is lent here, so (1) the real library must report NotPresent on this
machine, and (2) the conversion logic runs against a fake pynvml module with NVML's function
names and return shapes (nvidia-ml-py's API). Real-hardware validation needs a GPU task."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from agents.discovery import NotPresent, ToolFailed
from agents.discovery import nvidia as nvidia_mod
from agents.discovery.nvidia import NvidiaBackend, NvmlBackend, NvmlUnsupported
from tests.conftest import FIXTURES


def test_real_nvml_is_not_present_without_a_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # and no nvidia-smi either
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("an NVIDIA driver is present on this machine")
    except Exception:
        pass
    with pytest.raises(NotPresent):
        NvmlBackend().discover()
    backend = NvidiaBackend()
    with pytest.raises(NotPresent) as info:
        backend.discover()
    assert "nvml" in str(info.value) and "nvidia-smi" in str(info.value)


class FakeNVMLError(Exception):
    """nvidia-ml-py's NVMLError carries the NVML return code in ``value``."""

    def __init__(self, value: int = 999) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class Handle:
    index: int


def fake_pynvml(
    *, ecc: dict[int, int], xid_on: list[int], memory_unsupported: tuple[int, ...] = ()
) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    pending = list(xid_on)
    mem = types.SimpleNamespace
    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    mod.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1  # type: ignore[attr-defined]
    mod.NVML_VOLATILE_ECC = 0  # type: ignore[attr-defined]
    mod.nvmlEventTypeXidCriticalError = 8  # type: ignore[attr-defined]
    handles = [Handle(0), Handle(1)]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: handles[i]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: "NVIDIA H20"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: f"GPU-fake-{h.index}".encode()  # type: ignore[attr-defined]
    mod.NVML_ERROR_NOT_SUPPORTED = 3  # type: ignore[attr-defined]

    def memory_info(h: Handle) -> Any:
        if h.index in memory_unsupported:  # the GB10: unified memory, no framebuffer figures
            raise FakeNVMLError(3)
        return mem(total=97871 * 2**20, used=(h.index + 1) * 2**30)

    mod.nvmlDeviceGetMemoryInfo = memory_info  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPciInfo = lambda h: mem(busId=f"00000000:{0x18 + h.index:02X}:00.0")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: mem(gpu=40 + h.index)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTemperature = lambda h, sensor: 50  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: ecc.get(h.index, 0)  # type: ignore[attr-defined]
    mod.nvmlEventSetCreate = lambda: object()  # type: ignore[attr-defined]
    mod.nvmlDeviceRegisterEvents = lambda h, kinds, event_set: None  # type: ignore[attr-defined]

    def wait(event_set: object, timeout_ms: int) -> Any:
        if not pending:
            raise FakeNVMLError(10)  # NVML_ERROR_TIMEOUT
        return mem(device=handles[pending.pop()], eventData=79)

    mod.nvmlEventSetWait_v2 = wait  # type: ignore[attr-defined]
    return mod


def test_nvml_discovery_and_health(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(ecc={0: 0, 1: 3}, xid_on=[0]))
    backend = NvmlBackend()
    devices = backend.discover()
    assert [(d.index, d.model, d.uuid) for d in devices] == [
        (0, "H20", "GPU-fake-0"),
        (1, "H20", "GPU-fake-1"),
    ]
    assert devices[0].memory_bytes == 97871 * 2**20
    assert devices[1].pci_bus_id == "00000000:19:00.0"
    samples = backend.sample()
    assert (
        samples[0].xid_errors == 1 and samples[0].health == "unhealthy" and "XID" in samples[0].health_reason
    )
    assert samples[1].ecc_uncorrected_errors == 3 and samples[1].health == "unhealthy"
    assert samples[1].utilization_percent == 41 and samples[1].memory_used_bytes == 2 * 2**30
    # events are drained: the next sample is clean for device 0
    assert backend.sample()[0].health == "healthy"


def test_nvml_not_supported_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML answers NotSupported for memory (as on a GB10): discovery goes to nvidia-smi, whose
    real GB10 capture prints [N/A]; the GPU is isolated as unhealthy, the node does not fail."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(ecc={}, xid_on=[], memory_unsupported=(0,)))
    with pytest.raises(NvmlUnsupported):
        NvmlBackend().discover()
    capture = (FIXTURES / "discovery" / "nvidia-smi-query-gb10-unsloth.csv").read_text()
    monkeypatch.setattr(nvidia_mod, "run_tool", lambda argv, **_: capture)
    backend = NvidiaBackend()
    [device] = backend.discover()
    assert (device.model, device.health, device.memory_bytes) == ("GB10", "unhealthy", 0)
    assert "nvml" in backend.why_not[0] and "NVML error 3" in backend.why_not[0]
    assert backend.sample()[0].health == "unhealthy"


def test_nvml_failing_without_nvidia_smi_is_loud(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """NVML present but failing and no nvidia-smi: ToolFailed (a broken driver), not NotPresent."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(ecc={}, xid_on=[], memory_unsupported=(1,)))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolFailed) as info:
        NvidiaBackend().discover()
    assert not isinstance(info.value, NotPresent)
    assert "nvidia-smi not found" in str(info.value)


GPU_IS_LOST = 15  # NVML_ERROR_GPU_IS_LOST (nvml.h), e.g. after XID 79 "fallen off the bus"


@pytest.mark.parametrize("where", ["handle", "memory"])
def test_a_lost_gpu_is_isolated_not_the_node(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """GPU 1 answers GPU_IS_LOST: it used to raise ToolFailed for the whole node (and the agent
    then refused to start); now GPU 1 is unhealthy with NVML's error and GPU 0 is unaffected,
    in discovery and in every sample, and XID events stay registered for GPU 0."""
    mod = fake_pynvml(ecc={}, xid_on=[0])
    registered: list[int] = []

    def lost(h: Any) -> None:
        raise FakeNVMLError(GPU_IS_LOST)

    if where == "handle":
        get_handle = mod.nvmlDeviceGetHandleByIndex

        def handle(i: int) -> Any:
            if i == 1:
                raise FakeNVMLError(GPU_IS_LOST)
            return get_handle(i)

        mod.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    else:
        get_memory = mod.nvmlDeviceGetMemoryInfo
        mod.nvmlDeviceGetMemoryInfo = lambda h: lost(h) if h.index == 1 else get_memory(h)  # type: ignore[attr-defined]

    def register(h: Any, kinds: int, event_set: object) -> None:
        if h.index == 1:
            raise FakeNVMLError(GPU_IS_LOST)
        registered.append(h.index)

    mod.nvmlDeviceRegisterEvents = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    backend = NvmlBackend()
    devices = backend.discover()
    expected_uuid = "nvidia-gpu1" if where == "handle" else "GPU-fake-1"
    assert [(d.index, d.uuid, d.model, d.health) for d in devices] == [
        (0, "GPU-fake-0", "H20", "healthy"),
        (1, expected_uuid, "H20", "unhealthy"),
    ]
    assert devices[1].memory_bytes == 0 and devices[1].health_reason == f"NVML: NVML error {GPU_IS_LOST}"
    assert registered == [0]
    samples = backend.sample()
    assert [(s.index, s.health) for s in samples] == [(0, "unhealthy"), (1, "unhealthy")]
    assert "XID" in samples[0].health_reason  # GPU 0's event still arrives
    assert [(s.index, s.health) for s in backend.sample()] == [(0, "healthy"), (1, "unhealthy")]


def test_nvml_with_no_readable_gpu_is_tool_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_pynvml(ecc={}, xid_on=[])

    def lost(i: int) -> Any:
        raise FakeNVMLError(GPU_IS_LOST)

    mod.nvmlDeviceGetHandleByIndex = lost  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    with pytest.raises(ToolFailed, match="no GPU could be read"):
        NvmlBackend().discover()
