"""Pure pieces of lease notices and fencing: notice parsing, the file source, which processes a
FENCE stops, and when the agent tells the control plane."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.discovery.simulated import SimulatedBackend, load_fleet
from agents.fence import ReplicaProcess, replica_processes, to_fence
from agents.lease import MetadataNotices, Notice, NoticeError, parse_notice, write_notice
from agents.runtime import Agent, NodeIdentity

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def parse(body: str) -> Notice | None:
    return parse_notice(body, source="test", now=NOW, flag_notice_s=30)


def test_ec2_instance_action_is_a_notice_at_its_time() -> None:
    notice = parse('{"action": "terminate", "time": "2026-11-22T08:02:00Z"}')
    assert notice is not None
    assert notice.end == datetime(2026, 11, 22, 8, 2, tzinfo=UTC)
    assert "terminate" in notice.reason


def test_no_notice_answers() -> None:
    assert parse("") is None
    assert parse("  \n") is None
    assert parse("FALSE") is None


def test_a_true_flag_ends_after_the_flag_notice() -> None:
    notice = parse("TRUE\n")
    assert notice is not None and notice.end == NOW + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("soon", "neither TRUE/FALSE nor a JSON document"),
        ("[1, 2]", "expected a JSON object"),
        ('{"time": "2026-11-22T08:02:00Z"}', "action: missing"),
        ('{"action": "terminate"}', "time: missing"),
        ('{"action": "terminate", "time": "at noon"}', "time: not an ISO 8601 time"),
        ('{"action": "terminate", "time": "2026-11-22T08:02:00"}', "time: carries no timezone"),
    ],
)
def test_garbled_answers_name_what_is_wrong(body: str, names: str) -> None:
    with pytest.raises(NoticeError, match=names):
        parse(body)


def test_urls_other_than_http_and_file_are_refused() -> None:
    with pytest.raises(ValueError, match="lease_notice_url"):
        MetadataNotices("ftp://example/notice")
    with pytest.raises(ValueError, match="lease_notice_interval"):
        MetadataNotices("file:///tmp/x", interval_s=0)


async def test_file_source_reads_notices_written_by_tokenfab_preempt(tmp_path: Path) -> None:
    path = tmp_path / "notices" / "node-1.json"
    source = MetadataNotices(path.as_uri())
    assert await source.poll() is None  # no file yet: no notice
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=90)
    write_notice(path, end)
    notice = await source.poll()
    assert notice is not None and notice.end == end
    assert json.loads(path.read_text())["action"] == "terminate"
    path.write_text("{broken")
    assert await source.poll() is None and source.errors == 1  # logged, never a notice


async def test_a_flag_keeps_the_end_of_its_first_sighting(tmp_path: Path) -> None:
    path = tmp_path / "preempted"
    path.write_text("TRUE")
    source = MetadataNotices(path.as_uri(), flag_notice_s=30)
    first = await source.poll()
    second = await source.poll()
    assert first is not None and second is not None and first.end == second.end


def test_fence_stops_fenced_replicas_at_their_generation_or_older() -> None:
    procs = [
        ReplicaProcess(10, "r-1", 1),
        ReplicaProcess(11, "r-1", 1),  # the engine the actor started
        ReplicaProcess(12, "r-2", 3),  # re-placed: generation 3 runs, generation 2 was fenced
        ReplicaProcess(13, "r-3", 1),  # not fenced
    ]
    stopped = to_fence(procs, {"r-1": 1, "r-2": 2})
    assert [p.pid for p in stopped] == [10, 11]


def test_replica_processes_read_the_environment_of_this_node_only(tmp_path: Path) -> None:
    def proc(pid: int, **env: str) -> None:
        (tmp_path / str(pid)).mkdir()
        raw = b"\0".join(f"{k}={v}".encode() for k, v in {"PATH": "/bin", **env}.items()) + b"\0"
        (tmp_path / str(pid) / "environ").write_bytes(raw)

    proc(100, TOKENFAB_NODE_ID="n1", TOKENFAB_REPLICA_ID="r-1", TOKENFAB_GENERATION="2")
    proc(101, TOKENFAB_NODE_ID="n2", TOKENFAB_REPLICA_ID="r-1", TOKENFAB_GENERATION="2")  # other node
    proc(102, TOKENFAB_NODE_ID="n1")  # no replica id
    proc(103)  # not a replica process
    proc(104, TOKENFAB_NODE_ID="n1", TOKENFAB_REPLICA_ID="r-2", TOKENFAB_GENERATION="x")  # garbled
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "105").mkdir()  # gone, or unreadable: no environ
    found = sorted(replica_processes("n1", proc=tmp_path), key=lambda p: p.pid)
    assert found == [ReplicaProcess(100, "r-1", 2), ReplicaProcess(104, "r-2", 0)]


def test_the_agent_tells_each_session_once_and_again_when_the_end_moves_earlier() -> None:
    sim = load_fleet(None)[0]
    agent = Agent(SimulatedBackend(sim), NodeIdentity(sim.node_id, sim.cluster), address="127.0.0.1:1")
    assert agent.notice_message() is None  # nothing held
    assert agent.hold_notice(Notice(NOW + timedelta(seconds=120), "test", "provider notice"))
    first = agent.notice_message()
    assert first is not None and first.lease_notice.end_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(
        seconds=120
    )
    assert first.lease_notice.node_id == sim.node_id
    assert agent.notice_message() is None  # this session was told
    assert not agent.hold_notice(Notice(NOW + timedelta(seconds=600), "test", "later"))  # never postpones
    assert agent.notice_message() is None
    assert agent.hold_notice(Notice(NOW + timedelta(seconds=60), "test", "sooner"))
    assert agent.notice_message() is not None
    agent.new_session()  # a new session (possibly another instance) is told again
    assert agent.notice_message() is not None
    assert agent.status.notice.startswith("sooner")


@pytest.mark.parametrize(
    ("asked", "used"),
    [(1.0, 1.0), (0.2, 0.2), (0.0001, 0.1), (1e9, 30.0), (float("inf"), 30.0), (float("nan"), 1.0)],
)
def test_the_heartbeat_interval_the_control_plane_sends_is_clamped(asked: float, used: float) -> None:
    from agents.runtime import clamp_interval

    assert clamp_interval(asked) == used


def test_the_ack_deadline_is_three_beats_and_never_under_two_seconds() -> None:
    from agents.runtime import ack_deadline

    assert ack_deadline(1.0) == 3.0
    assert ack_deadline(0.2) == 2.0
    assert ack_deadline(30.0) == 90.0
