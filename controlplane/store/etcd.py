"""etcd implementation of the Store, on aetcd (the maintained asyncio etcd3 client).

Compare-and-swap is one etcd transaction: ``mod_revision(key) == expected`` then put, else
nothing. ``expected == 0`` compares ``create_revision == 0`` instead, which etcd defines as "the
key does not exist". Connection errors surface as :class:`StoreUnavailable` (retryable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.rpc import Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest

from controlplane.store.base import KeyValue, LeaseExpired, StoreUnavailable, WatchEvent, WatchEventKind
from tokenfab.tls import ClientTLS


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
        timeout_s: float = 5.0,
        tls: ClientTLS | None = None,
    ) -> None:
        self._client = (
            aetcd.Client(host=host, port=port, timeout=timeout_s)
            if tls is None
            else _TLSClient(host=host, port=port, timeout=timeout_s, tls=tls)
        )
        self.endpoint = f"{host}:{port}"
        self._timeout_s = timeout_s

    async def connect(self) -> None:
        try:
            await self._client.connect()
            await self._client.status()
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise StoreUnavailable(f"etcd at {self.endpoint}: {exc}") from exc

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise StoreUnavailable(f"etcd at {self.endpoint}: {exc}") from exc

    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(self._client.get(key.encode()))
        return _kv(result) if result is not None else None

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        raw_prefix = prefix.encode()
        result = await self._call(
            self._client.get_range(raw_prefix, _prefix_end(raw_prefix), sort_target="key")
        )
        # GetRange is falsy when empty but still carries the header with the store revision.
        return [_kv(kv) for kv in result], int(result.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        result = await self._call(self._client.put(key.encode(), value, lease=lease or None))
        return int(result.header.revision)

    async def _txn_if_revision(self, raw: bytes, expected_mod_revision: int, op: RequestOp) -> int | None:
        """Run ``op`` if the key is at ``expected_mod_revision`` (0: absent); the new revision or None."""
        if expected_mod_revision == 0:
            compare = Compare(key=raw, target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)
        else:
            compare = Compare(
                key=raw, target=Compare.MOD, result=Compare.EQUAL, mod_revision=expected_mod_revision
            )
        await self._call(self._client.connect())
        try:
            response = await self._client.kvstub.Txn(
                TxnRequest(compare=[compare], success=[op], failure=[]), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise StoreUnavailable(f"etcd at {self.endpoint}: {exc.code().name} {exc.details()}") from exc
        return int(response.header.revision) if response.succeeded else None

    async def compare_and_put(
        self, key: str, value: bytes, *, expected_mod_revision: int, lease: int = 0
    ) -> int | None:
        raw = key.encode()
        op = RequestOp(request_put=PutRequest(key=raw, value=value, lease=lease))
        return await self._txn_if_revision(raw, expected_mod_revision, op)

    async def create_all(self, items: list[tuple[str, bytes]]) -> int | None:
        compares = [
            Compare(key=key.encode(), target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)
            for key, _ in items
        ]
        puts = [RequestOp(request_put=PutRequest(key=key.encode(), value=value)) for key, value in items]
        await self._call(self._client.connect())
        try:
            response = await self._client.kvstub.Txn(
                TxnRequest(compare=compares, success=puts, failure=[]), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise StoreUnavailable(f"etcd at {self.endpoint}: {exc.code().name} {exc.details()}") from exc
        return int(response.header.revision) if response.succeeded else None

    async def compare_and_delete(self, key: str, *, expected_mod_revision: int) -> bool:
        if expected_mod_revision == 0:
            return False
        raw = key.encode()
        op = RequestOp(request_delete_range=DeleteRangeRequest(key=raw))
        return await self._txn_if_revision(raw, expected_mod_revision, op) is not None

    async def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        raw = prefix.encode()
        watch = await self._call(
            self._client.watch(raw, range_end=_prefix_end(raw), start_revision=start_revision or None)
        )
        try:
            async for event in watch:
                kind = WatchEventKind.PUT if event.kind == "PUT" else WatchEventKind.DELETE
                yield WatchEvent(
                    kind, event.kv.key.decode(), bytes(event.kv.value), int(event.kv.mod_revision)
                )
        finally:
            await watch.cancel()

    async def grant_lease(self, ttl_s: int) -> int:
        lease = await self._call(self._client.lease(ttl_s))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> None:
        reply = await self._call(self._client.refresh_lease(lease_id))
        if reply is None or int(reply.TTL) <= 0:  # etcd answers an unknown lease with TTL 0
            raise LeaseExpired(f"lease {lease_id} not found")

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(self._client.revoke_lease(lease_id))

    async def close(self) -> None:
        await self._client.close()
