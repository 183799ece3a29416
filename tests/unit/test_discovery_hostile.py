"""Vendor parsers against hostile variants of the real captures (review of issue 12 section 1).

Each case starts from a real capture in tests/fixtures/discovery (provenance in its README) and
damages it the way real machines do: truncation, deleted or repeated lines, stray characters,
CRLF line ends, a warning line before a CSV header, a renamed column. The rules checked are the
project's: garbled output fails loudly (ToolFailed) or maps to unhealthy, never to healthy, and
never escapes as another exception (that would end the agent's session for the whole node);
whatever is returned can be registered (the control plane refuses duplicate uuids or indices).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.discovery.ascend import parse_chip_map, parse_npu_smi_info, parse_usages
from agents.discovery.base import (
    HEALTHY,
    UNHEALTHY,
    DeviceSample,
    DiscoveredDevice,
    MiB,
    ToolFailed,
    distinct,
    is_number,
)
from agents.discovery.biren import parse_brsmi_csv
from agents.discovery.metax import parse_mx_smi
from agents.discovery.nvidia import parse_nvidia_smi_csv
from tests.conftest import FIXTURES

DATA = FIXTURES / "discovery"
CAPTURES = {p.name: p.read_text() for p in sorted(DATA.iterdir()) if p.suffix in (".txt", ".csv")}
Pairs = list[tuple[DiscoveredDevice, DeviceSample]]


def device_parser(name: str) -> Callable[[str], Pairs] | None:
    """The parser of a summary capture, as (device, sample) pairs; None for maps and usages."""
    if name.startswith(("npu-smi-info-m-", "npu-smi-info-t-")):
        return None
    if name.startswith("npu-smi"):
        return lambda text: [(c.device, c.sample) for c in parse_npu_smi_info(text)]
    if name.startswith(("mx-smi", "ht-smi")):
        return lambda text: parse_mx_smi(text, tool=name.split("-")[0] + "-smi")
    if name.startswith("nvidia-smi"):
        return parse_nvidia_smi_csv
    return parse_brsmi_csv


SUMMARIES = sorted(name for name in CAPTURES if device_parser(name) is not None)


def parse(name: str, text: str) -> Pairs:
    parser = device_parser(name)
    assert parser is not None
    return parser(text)


def assert_registrable(pairs: Pairs) -> None:
    """What the control plane's Device and NodeRegistration accept (controlplane/domain/nodes.py):
    anything else makes it refuse the whole node."""
    devices = [d for d, _ in pairs]
    assert len({d.uuid.strip() for d in devices}) == len(devices), [d.uuid for d in devices]
    assert len({d.index for d in devices}) == len(devices), [d.index for d in devices]
    for device, sample in pairs:
        assert device.index == sample.index
        assert 0 <= device.index < 1024
        assert 1 <= len(device.uuid.strip()) <= 128 and 1 <= len(device.model.strip()) <= 64
        assert 0 <= device.memory_bytes <= 2 * 1024**4
        assert device.health in ("healthy", "degraded", "unhealthy")
        if device.memory_bytes < 256 * MiB:  # unknown (0) or implausible memory: never healthy
            assert device.health == "unhealthy" and device.health_reason
        # and what a heartbeat may carry (DeviceTelemetry.check): anything else ends the stream
        assert 0.0 <= sample.utilization_percent <= 100.0
        assert -50.0 <= sample.temperature_celsius <= 200.0
        assert 0 <= sample.memory_used_bytes <= 2 * 1024**4
        assert sample.ecc_uncorrected_errors >= 0 and sample.xid_errors >= 0
        assert len(device.health_reason) <= 256 and len(sample.health_reason) <= 256


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(SUMMARIES))
    text = CAPTURES[name]
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["delete", "insert", "truncate", "repeat-line", "drop-line"]))
        if op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 6)) :]
        elif op == "insert":
            noise = draw(st.text(alphabet=st.sampled_from('|+-=│ /09²٣\r\nNAOK%C,"'), min_size=1, max_size=4))
            text = text[:at] + noise + text[at:]
        elif op == "truncate":
            text = text[:at]
        else:
            lines = text.splitlines(keepends=True)
            j = draw(st.integers(0, len(lines) - 1))
            if op == "repeat-line":
                lines.insert(j, lines[j])
            else:
                del lines[j]
            text = "".join(lines)
    return name, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_captures_fail_loudly_or_stay_registrable(case: tuple[str, str]) -> None:
    """Any damage: ToolFailed, or devices the control plane accepts (unique uuids and indices,
    no negative memory, unknown memory unhealthy). No other exception escapes."""
    name, text = case
    try:
        pairs = parse(name, text)
    except ToolFailed:
        return
    assert_registrable(pairs)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_escapes_as_another_exception(text: str) -> None:
    for parser in (parse_chip_map, parse_usages):
        with contextlib.suppress(ToolFailed):
            parser(text)
    for name in SUMMARIES:
        with contextlib.suppress(ToolFailed):
            assert_registrable(parse(name, text))


@pytest.mark.parametrize(
    ("name", "row", "digit"),
    [("npu-smi-info-310p3-duo-25.2.0-nvtop-421.txt", "| 2       310P3", "²"),
     ("mx-smi-2.2.8-n260x2.txt", "| 0       MetaX N260", "²"),
     ("ht-smi-2.2.4-x201.txt", "| 0           ", "٣")],
)  # fmt: skip
def test_non_ascii_digits_in_an_index_cell_do_not_escape(name: str, row: str, digit: str) -> None:
    """'²'.isdigit() is True but int('²') raises ValueError: that escaped and failed the node."""
    text = CAPTURES[name]
    assert row in text
    damaged_text = text.replace(row, row.replace(row.strip("| ")[0], digit, 1), 1)
    try:
        pairs = parse(name, damaged_text)
    except ToolFailed:
        return
    assert_registrable(pairs)
    assert all(
        d.health == "unhealthy" for d, _ in pairs if d.uuid not in {x.uuid for x, _ in parse(name, text)}
    )


def test_is_number_is_ascii_only() -> None:
    assert is_number("12") and not is_number("²") and not is_number("٣") and not is_number("")
    assert parse_chip_map("NPU ID  Chip ID  Chip Logic ID  Chip Name\n²  0  0  Ascend910\n") == {}
    assert parse_usages("Chip ID : ²\nHBM Capacity(MB) : 65536\n") == {}


def test_mx_smi_layout_with_a_renamed_state_column_is_not_healthy() -> None:
    """A future mx-smi that renames GPU-State (here: the real 2.2.8 capture with the column
    renamed and GPU 0 'Lost') used to read as healthy because the state column was missing."""
    text = (
        CAPTURES["mx-smi-2.2.8-n260x2.txt"]
        .replace("| GPU-State            |", "| GPU-Health           |")
        .replace("| Available            |", "| Lost                 |", 1)
    )
    pairs = parse_mx_smi(text)
    assert [d.health for d, _ in pairs] == ["unhealthy", "unhealthy"]
    assert "no GPU-State column" in pairs[0][0].health_reason


@pytest.mark.parametrize("name", ["mx-smi-2.1.6-mxc550x8-paddlenlp.txt", "mx-smi-2.1.12-c550-t9k.txt"])
def test_mx_smi_old_layouts_without_state_stay_healthy(name: str) -> None:
    assert {d.health for d, _ in parse_mx_smi(CAPTURES[name])} == {HEALTHY}


def test_a_gpu_listed_twice_is_registrable_and_unhealthy() -> None:
    """The two N260s with the second one's row made to repeat the first one's GPU number and
    Bus-id: both got uuid 'metax-gpu0' and index 0, which the control plane refuses for the node."""
    text = (
        CAPTURES["mx-smi-2.2.8-n260x2.txt"]
        .replace("0000:21:00.0", "0000:01:00.0")
        .replace("| 1       MetaX N260", "| 0       MetaX N260")
    )
    pairs = parse_mx_smi(text)
    assert_registrable(pairs)
    assert [(d.uuid, d.health) for d, _ in pairs] == [("metax-gpu0", "unhealthy")]
    assert "listed uuid metax-gpu0 2 times" in pairs[0][0].health_reason


def test_distinct_moves_a_repeated_index_and_marks_both() -> None:
    pairs = [
        (DiscoveredDevice(uuid=u, index=0, model="X", memory_bytes=1024 * MiB), DeviceSample(index=0))
        for u in ("a", "b")
    ] + [(DiscoveredDevice(uuid="c", index=1, model="X", memory_bytes=1024 * MiB), DeviceSample(index=1))]
    out = distinct(pairs, tool="t")
    assert [(d.uuid, d.index, d.health) for d, _ in out] == [
        ("a", 0, "unhealthy"),
        ("b", 2, "unhealthy"),
        ("c", 1, "healthy"),
    ]
    assert [s.index for _, s in out] == [0, 2, 1]
    assert distinct(pairs[2:], tool="t") == pairs[2:]  # nothing repeated: unchanged


def test_nvidia_smi_rows_repeated_by_the_tool_are_one_unhealthy_gpu() -> None:
    row = "0, GPU-5f3c, NVIDIA H100 80GB HBM3, 81559"
    pairs = parse_nvidia_smi_csv("\n".join(["index, uuid, name, memory.total [MiB]", row, row]))
    assert [(d.uuid, d.index, d.health) for d, _ in pairs] == [("GPU-5f3c", 0, "unhealthy")]


def test_nvidia_smi_warning_before_the_header_is_skipped() -> None:
    """The header was required on the first line; a notice printed before it failed the node."""
    text = (
        "WARNING: infoROM is corrupted at gpu 0000:01:00.0\n"
        + CAPTURES["nvidia-smi-query-h100-590.48.01.csv"]
    )
    [(device, _)] = parse_nvidia_smi_csv(text)
    assert (device.model, device.memory_bytes, device.health) == ("H100", 81559 * MiB, "healthy")


def test_nvidia_smi_negative_memory_is_unknown_not_negative() -> None:
    [(device, _)] = parse_nvidia_smi_csv("index, uuid, name, memory.total [MiB]\n0, GPU-1, NVIDIA L40S, -5\n")
    assert (device.memory_bytes, device.health) == (0, "unhealthy")


def test_brsmi_stray_carriage_return_is_tool_failed() -> None:
    with pytest.raises(ToolFailed, match="brsmi"):
        parse_brsmi_csv('0,BR-1,BR104,32768\r"1,BR-2\rx,BR104,32768\n')


@pytest.mark.parametrize("name", SUMMARIES)
def test_crlf_line_ends_read_like_lf(name: str) -> None:
    def key(pairs: Pairs) -> list[Any]:
        return [(d.uuid, d.index, d.memory_bytes, d.health) for d, _ in pairs]

    assert key(parse(name, CAPTURES[name].replace("\n", "\r\n"))) == key(parse(name, CAPTURES[name]))


@pytest.mark.parametrize("name", SUMMARIES)
def test_empty_output_is_tool_failed_or_nothing(name: str) -> None:
    """Empty output is never devices; the Biren CSV parser returns [] and its backend then
    reports 'brsmi listed no devices' (tests/unit/test_discovery.py)."""
    with contextlib.suppress(ToolFailed):
        assert parse(name, "") == [] and name.startswith("brsmi")


def test_tool_output_that_is_not_utf8_is_decoded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """``subprocess.run(text=True)`` raised UnicodeDecodeError (not ToolFailed) when a tool printed
    in a GBK locale; that escaped every caller. The real ht-smi 2.2.9 capture, with a GBK-encoded
    Chinese word in its banner and a GPU-State in GBK, is read; the garbled state is unhealthy."""
    import subprocess

    from agents.discovery import base

    text = CAPTURES["ht-smi-2.2.9-x201x8.txt"]
    banner = text.splitlines()[0]
    raw = text.replace(banner, banner + " 版本", 1).replace(
        "| Available            |", "| 可用                 |", 1
    )
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        assert "text" not in kwargs and "encoding" not in kwargs  # bytes in, decoded here
        return subprocess.CompletedProcess(argv, 0, raw.encode("gbk"), "错误".encode("gbk"))

    monkeypatch.setattr(base.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(base.subprocess, "run", fake_run)
    pairs = parse_mx_smi(base.run_tool(["ht-smi"]), tool="ht-smi")
    assert calls == [["ht-smi"]]
    assert len(pairs) == 8
    assert pairs[0][0].health == "unhealthy" and "unknown ht-smi GPU-State" in pairs[0][0].health_reason
    assert {d.health for d, _ in pairs[1:]} == {"healthy"}
    assert base.decode_output(b"\xff\xfe ok") == "\ufffd\ufffd ok"


def test_a_tool_exiting_non_zero_with_partial_output_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that exits non-zero after printing some rows (here a real L40S row, exit code 15
    and a device-handle error on stderr): the rows are not taken as the node's devices (a GPU
    missing from them would silently vanish); the failure is ToolFailed with the tool's stderr,
    which the agent's sampling reports on every device."""
    import subprocess

    from agents.discovery import base

    partial = CAPTURES["nvidia-smi-query-l40s-595.80.csv"]

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(
            argv, 15, partial.encode(), b"Unable to determine the device handle for GPU1"
        )

    monkeypatch.setattr(base.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(base.subprocess, "run", fake_run)
    with pytest.raises(ToolFailed, match="exited 15: Unable to determine the device handle for GPU1"):
        base.run_tool(["nvidia-smi"])


_DEVICES = st.lists(
    st.tuples(
        st.text(min_size=0, max_size=140),
        st.integers(-5, 1100),
        st.text(max_size=70),
        st.integers(0, 3 * 1024**4),
        st.sampled_from(["healthy", "degraded", "unhealthy"]),
        st.tuples(  # utilization, temperature, memory used, ECC errors
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-1, 3 * 1024**4),
            st.integers(-2, 5),
        ),
    ),
    max_size=12,
)


def reason(health: str) -> str:
    return "" if health == "healthy" else f"the parser's reason for {health}"


@settings(max_examples=300, deadline=None)
@given(_DEVICES)
def test_distinct_always_returns_registrable_devices(
    rows: list[tuple[str, int, str, int, str, tuple[float, float, int, int]]],
) -> None:
    """Any list of devices a parser could build (a reason with every verdict but healthy): what
    comes out is registrable, and every device that had to change is unhealthy with a reason."""
    pairs = [
        (
            DiscoveredDevice(uuid=u, index=i, model=m, memory_bytes=b, health=h, health_reason=reason(h)),
            DeviceSample(
                index=i,
                utilization_percent=live[0],
                temperature_celsius=live[1],
                memory_used_bytes=live[2],
                ecc_uncorrected_errors=live[3],
                health=h,
                health_reason=reason(h),
            ),
        )
        for u, i, m, b, h, live in rows
    ]
    out = distinct(pairs, tool="t")
    assert_registrable(out)
    # the control plane strips whitespace itself: only other changes count
    originals = {(d.uuid.strip(), d.index, d.model.strip(), d.memory_bytes) for d, _ in pairs}
    for device, sample in out:
        if (device.uuid, device.index, device.model, device.memory_bytes) not in originals:
            assert device.health == sample.health == UNHEALTHY and device.health_reason


def test_npu_smi_absurd_npu_id_is_bounded_not_a_crash() -> None:
    """A 200-digit NPU id (garbled output) made a uuid the control plane refuses; shortening it
    must not lose the chip either (the chips are matched to their rows by uuid)."""
    text = CAPTURES["npu-smi-info-310-21.0.3.1-na-busid.txt"]
    row = next(line for line in text.splitlines() if line.startswith("| 0 "))
    damaged_text = text.replace(row, "| " + "9" * 200 + row[3:], 1)
    [chip] = parse_npu_smi_info(damaged_text)
    assert len(chip.device.uuid) == 128 and chip.device.health == "unhealthy"
    assert "uuid longer than 128" in chip.device.health_reason


def test_parse_int_and_float_survive_digit_strings_too_long_for_a_float() -> None:
    """float('9' * 400) is inf and int(inf) raised OverflowError, out of every parser."""
    from agents.discovery.base import parse_float, parse_int

    assert parse_int("9" * 400) == 0 and parse_int("9" * 400, default=-1) == -1
    assert parse_float("9" * 400 + "C") == 0.0
    assert (parse_int("81559 MiB"), parse_float("37.5C"), parse_int("[N/A]", default=-1)) == (81559, 37.5, -1)
    row = "0, GPU-1, NVIDIA L40S, " + "9" * 400
    [(device, _)] = parse_nvidia_smi_csv("index, uuid, name, memory.total [MiB]\n" + row)
    assert (device.memory_bytes, device.health) == (0, "unhealthy")


def test_out_of_range_telemetry_is_unhealthy_not_a_refused_heartbeat() -> None:
    """The control plane refuses a heartbeat with a temperature outside -50..200 C, a utilization
    outside 0..100 % or a negative count, and ends the stream (the agent then reconnects in a
    loop). The real L40S capture's row with those cells garbled: that GPU is unhealthy, and
    every figure it sends is one the control plane accepts."""
    text = CAPTURES["nvidia-smi-query-h100-590.48.01.csv"]
    header, row = text.splitlines()[:2]
    names = [h.strip() for h in header.split(",")]
    cells = [c.strip() for c in row.split(",")]
    for name, value in [("temperature.gpu", "65535"), ("utilization.gpu [%]", "250 %"),
                        ("ecc.errors.uncorrected.volatile.total", "-1")]:  # fmt: skip
        cells[names.index(name)] = value
    pairs = parse_nvidia_smi_csv(header + "\n" + ", ".join(cells))
    assert_registrable(pairs)
    [(device, sample)] = pairs
    assert device.health == sample.health == "unhealthy"
    for word in ("temperature 65535C", "utilization 250%", "negative error count"):
        assert word in sample.health_reason


def test_long_reasons_are_clipped_to_what_the_control_plane_takes() -> None:
    """Several garbled cells of one npu-smi row gave a reason over 256 characters, which the
    heartbeat carries as is and the control plane refuses."""
    text = CAPTURES["npu-smi-info-910a-22.0.3.1-gpustack.txt"]
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| 0 ") and "|" in line[3:])
    lines[at] = lines[at].rstrip().removesuffix("|") + " junk" * 60 + " |"  # 60 extra values
    chips = parse_npu_smi_info("\n".join(lines))
    assert_registrable([(c.device, c.sample) for c in chips])
    assert chips[0].npu_id == 0 and chips[0].device.health == "unhealthy"
    assert len(chips[0].device.health_reason) == 256 and chips[0].device.health_reason.endswith("...")
    assert chips[0].sample.health_reason == chips[0].device.health_reason
