"""Which etcd failures the store retries on another member (controlplane/store/etcd.py): the
errors are built the way aetcd builds them from a gRPC status, so the test follows its mapping."""

from __future__ import annotations

import grpc
import pytest
from aetcd import exceptions

from controlplane.store.etcd import _GONE, _server_timed_out


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def raised(code: grpc.StatusCode, details: str) -> Exception:
    """What aetcd raises for an RPC that ended with ``code`` and ``details``."""
    with pytest.raises(exceptions.ClientError) as info:
        exceptions._handle_exception(rpc_error(code, details))
    return info.value


def test_a_member_without_a_leader_timing_out_is_retried_elsewhere() -> None:
    # etcd 3.5 answers a read it could not serve before our deadline (no raft leader yet) with
    # status UNKNOWN and Go's context.DeadlineExceeded text
    exc = raised(grpc.StatusCode.UNKNOWN, "context deadline exceeded")
    assert not isinstance(exc, _GONE)  # aetcd's generic ClientError: not retried before
    assert _server_timed_out(exc)


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNKNOWN, "etcdserver: mvcc: required revision is a future revision"),
        (grpc.StatusCode.INVALID_ARGUMENT, "context deadline exceeded"),
        (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: requested lease not found"),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
    ],
)
def test_other_answers_are_not_taken_for_a_timeout(code: grpc.StatusCode, details: str) -> None:
    assert not _server_timed_out(raised(code, details))


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_unreachable_or_slow_member_is_gone(code: grpc.StatusCode) -> None:
    assert isinstance(raised(code, "connection refused"), _GONE)


def test_a_raw_transaction_timing_out_is_recognised() -> None:
    # compare-and-swap goes to etcd's Txn stub directly: the status arrives unwrapped, and the
    # store answers StoreUnavailable without sending the transaction again (it may yet apply)
    assert _server_timed_out(rpc_error(grpc.StatusCode.UNKNOWN, "context deadline exceeded"))
    assert not _server_timed_out(rpc_error(grpc.StatusCode.UNKNOWN, "etcdserver: too many operations in txn"))
