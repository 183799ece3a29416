"""etcd implementation of the Store, on aetcd (the maintained asyncio etcd3 client).

Compare-and-swap is one etcd transaction: ``mod_revision(key) == expected`` then put, else
nothing. ``expected == 0`` compares ``create_revision == 0`` instead, which etcd defines as "the
key does not exist". Connection errors surface as :class:`StoreUnavailable` (retryable).

Several endpoints (the members of one etcd cluster): the store talks to one at a time. A call that
cannot reach it moves to the next member and is tried there once per member before it fails, so
losing one member of three costs a reconnect, not an outage. A compare-and-swap retried this way
is still safe: if the first attempt did land, the retry's compare fails and the caller re-reads,
as after any lost race. Watches that break end with StoreUnavailable; their owners resume them
from the last revision they saw, on the member the store has moved to.

Fenced writes add one comparison to the transaction (the fence key's ``create_revision``) and
read the fence key in the failure branch, so one round trip tells a lost race (None) from a
lost fence (:class:`Fenced`). Compaction: aetcd's ``RevisionCompactedError`` becomes
:class:`RevisionCompacted`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.exceptions import RevisionCompactedError
from aetcd.rpc import Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest

from controlplane.store.base import (
    Fence,
    Fenced,
    KeyValue,
    LeaseExpired,
    RevisionCompacted,
    StoreUnavailable,
    WatchEvent,
    WatchEventKind,
)
from tokenfab.logs import get_logger
from tokenfab.tls import ClientTLS

log = get_logger("store.etcd")
T = TypeVar("T")
_GONE = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError)


def _server_timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is the member giving up on our deadline: etcd answers a request it cannot
    serve in time (no raft leader, e.g. just after the leader died) with gRPC status UNKNOWN and the
    Go error text "context deadline exceeded". aetcd's calls raise it as their generic ClientError
    (the status is its cause); raw transactions, as the status itself."""
    error = exc.__cause__ if isinstance(exc, aetcd.ClientError) else exc
    return (
        isinstance(error, grpc.aio.AioRpcError)
        and error.code() == grpc.StatusCode.UNKNOWN
        and "context deadline exceeded" in (error.details() or "")
    )


def _prefix_end(prefix: bytes) -> bytes:
    """The exclusive upper bound of all keys starting with ``prefix`` (etcd's range_end)."""
    as_list = bytearray(prefix)
    for i in reversed(range(len(as_list))):
        if as_list[i] < 0xFF:
            as_list[i] += 1
            return bytes(as_list[: i + 1])
    return b"\0"


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode(),
        value=bytes(raw.value),
        create_revision=int(raw.create_revision),
        mod_revision=int(raw.mod_revision),
        lease=int(raw.lease),
    )


class _TLSClient(aetcd.Client):  # type: ignore[misc]  # aetcd ships no type hints
    """aetcd's client over TLS (aetcd itself only opens plaintext channels): the same stubs and
    watcher as ``aetcd.Client.connect``, on a secure channel. Username/password auth is not used
    here: with TLS, etcd authenticates clients by their certificate (``--client-cert-auth``)."""

    def __init__(self, *, tls: ClientTLS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        self.channel = grpc.aio.secure_channel(
            target, self._tls.credentials(), options=[*self._options.items(), *self._tls.channel_options()]
        )
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=None)
        self._connected.set()


class EtcdStore:
    """A Store on an etcd cluster. ``await store.connect()`` before use; ``close()`` after.

    ``tls``: the CA that signed etcd's certificate and, for etcd's ``--client-cert-auth``, a
    client certificate and key.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2379,
        *,
        endpoints: Sequence[tuple[str, int]] = (),
        timeout_s: float = 5.0,
        tls: ClientTLS | None = None,
        on_failover: Callable[[], None] = lambda: None,
    ) -> None:
        self._endpoints = list(endpoints) or [(host, port)]
        self._on_failover = on_failover
        self._tls = tls
        self._timeout_s = timeout_s
        self._index = 0
        self._client = self._make_client(0)
        self.failovers = 0  # member switches, for tests and logs
        self._closing: set[asyncio.Task[None]] = set()

    def _make_client(self, index: int) -> Any:
        host, port = self._endpoints[index]
        if self._tls is None:
            return aetcd.Client(host=host, port=port, timeout=self._timeout_s)
        return _TLSClient(host=host, port=port, timeout=self._timeout_s, tls=self._tls)

    @property
    def endpoint(self) -> str:
        host, port = self._endpoints[self._index]
        return f"{host}:{port}"

    async def connect(self) -> None:
        """Connect to the first member that answers."""
        errors = []
        for _ in self._endpoints:
            try:
                await self._client.connect()
                await self._client.status()
                return
            except _GONE as exc:
                errors.append(f"{self.endpoint}: {exc}")
                if len(self._endpoints) == 1:
                    break
                await self._failover(self._client)
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    async def _failover(self, failed: Any) -> None:
        """Move to the next member, unless another call already moved away from ``failed``."""
        if self._client is not failed or len(self._endpoints) == 1:
            return
        before = self.endpoint
        self._index = (self._index + 1) % len(self._endpoints)
        self._client = self._make_client(self._index)
        self.failovers += 1
        self._on_failover()
        log.warning("etcd.failover", unreachable=before, now=self.endpoint)
        # Closing a channel cancels the calls still on it, and grpc.aio reports that to their
        # callers as asyncio.CancelledError: leave them their deadline, then close.
        self._closing.add(asyncio.create_task(self._close_later(failed)))

    async def _close_later(self, client: Any) -> None:
        try:
            await asyncio.sleep(self._timeout_s + 1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)
        finally:
            self._closing.discard(asyncio.current_task())

    async def _call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client)``; on a member that cannot be reached, once more on each other member."""
        detail = ""
        for _ in self._endpoints:
            client = self._client
            try:
                await client.connect()
                return await op(client)
            except _GONE as exc:
                detail = f"etcd at {self.endpoint}: {exc}"
            except grpc.aio.AioRpcError as exc:
                if _server_timed_out(exc):  # a raw transaction (compare-and-swap): it may yet apply,
                    raise StoreUnavailable(f"etcd at {self.endpoint}: timed out ({exc.details()})") from exc
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                detail = f"etcd at {self.endpoint}: {exc.code().name} {exc.details()}"
            except aetcd.ClientError as exc:
                if not _server_timed_out(exc):  # like a DEADLINE_EXCEEDED: another member may answer
                    raise
                detail = f"etcd at {self.endpoint}: timed out ({exc})"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # our caller is being cancelled
                # grpc.aio raises CancelledError for a call whose channel was closed under it
                raise StoreUnavailable(f"etcd at {self.endpoint}: call cancelled by a reconnect") from None
            await self._failover(client)
        raise StoreUnavailable(detail)

    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(lambda c: c.get(key.encode()))
        return _kv(result) if result is not None else None

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        raw_prefix = prefix.encode()
        result = await self._call(
            lambda c: c.get_range(raw_prefix, _prefix_end(raw_prefix), sort_target="key")
        )
        # GetRange is falsy when empty but still carries the header with the store revision.
        return [_kv(kv) for kv in result], int(result.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0, fence: Fence | None = None) -> int:
        if fence is not None:
            op = RequestOp(request_put=PutRequest(key=key.encode(), value=value, lease=lease))
            revision = await self._txn_fenced([], [op], fence)
            assert revision is not None  # no comparison but the fence's, which raises
            return revision
        result = await self._call(lambda c: c.put(key.encode(), value, lease=lease or None))
        return int(result.header.revision)

    async def _txn(self, request: TxnRequest) -> Any:
        return await self._call(lambda c: c.kvstub.Txn(request, timeout=self._timeout_s))

    async def _txn_fenced(self, compares: list[Any], ops: list[Any], fence: Fence | None) -> int | None:
        """Run ``ops`` if every comparison (and the fence) holds: the new revision, or None when a
        comparison failed; Fenced when the fence did."""
        failure: list[Any] = []
        if fence is not None:
            raw = fence.key.encode()
            compares = [
                *compares,
                Compare(
                    key=raw,
                    target=Compare.CREATE,
                    result=Compare.EQUAL,
                    create_revision=fence.create_revision,
                ),
            ]
            failure = [RequestOp(request_range=RangeRequest(key=raw))]
        response = await self._txn(TxnRequest(compare=compares, success=ops, failure=failure))
        if response.succeeded:
            return int(response.header.revision)
        if fence is not None:
            found = response.responses[0].response_range.kvs
            if not found or int(found[0].create_revision) != fence.create_revision:
                raise Fenced(f"{fence.key} is no longer at create revision {fence.create_revision}")
        return None

    @staticmethod
    def _at_revision(raw: bytes, expected_mod_revision: int) -> Any:
        if expected_mod_revision == 0:
            return Compare(key=raw, target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)
        return Compare(key=raw, target=Compare.MOD, result=Compare.EQUAL, mod_revision=expected_mod_revision)

    async def compare_and_put(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
    ) -> int | None:
        raw = key.encode()
        op = RequestOp(request_put=PutRequest(key=raw, value=value, lease=lease))
        return await self._txn_fenced([self._at_revision(raw, expected_mod_revision)], [op], fence)

    async def create_all(self, items: list[tuple[str, bytes]], *, fence: Fence | None = None) -> int | None:
        compares = [self._at_revision(key.encode(), 0) for key, _ in items]
        puts = [RequestOp(request_put=PutRequest(key=key.encode(), value=value)) for key, value in items]
        return await self._txn_fenced(compares, puts, fence)

    async def compare_and_delete(
        self, key: str, *, expected_mod_revision: int, fence: Fence | None = None
    ) -> bool:
        if expected_mod_revision == 0:
            return False
        raw = key.encode()
        op = RequestOp(request_delete_range=DeleteRangeRequest(key=raw))
        return (
            await self._txn_fenced([self._at_revision(raw, expected_mod_revision)], [op], fence) is not None
        )

    async def compact(self, revision: int) -> None:
        await self._call(lambda c: c.compact(revision, physical=True))

    async def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        raw = prefix.encode()
        client = self._client
        try:
            watch = await self._call(
                lambda c: c.watch(raw, range_end=_prefix_end(raw), start_revision=start_revision or None)
            )
        except RevisionCompactedError as exc:
            raise RevisionCompacted(int(exc.compacted_revision)) from exc
        try:
            async for event in watch:
                kind = WatchEventKind.PUT if event.kind == "PUT" else WatchEventKind.DELETE
                yield WatchEvent(
                    kind, event.kv.key.decode(), bytes(event.kv.value), int(event.kv.mod_revision)
                )
        except RevisionCompactedError as exc:  # compacted while this watch lagged behind
            raise RevisionCompacted(int(exc.compacted_revision)) from exc
        except (*_GONE, grpc.aio.AioRpcError) as exc:
            await self._failover(client)  # the member went away: the owner resumes on the next
            raise StoreUnavailable(f"etcd watch broken: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await watch.cancel()

    async def grant_lease(self, ttl_s: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl_s))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> None:
        reply = await self._call(lambda c: c.refresh_lease(lease_id))
        if reply is None or int(reply.TTL) <= 0:  # etcd answers an unknown lease with TTL 0
            raise LeaseExpired(f"lease {lease_id} not found")

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id))

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        await self._client.close()
