"""The etcd Store honours the same contract as the in-memory one (tests/store_contract.py)."""

from __future__ import annotations

import pytest

from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.store.base import StoreUnavailable
from controlplane.store.etcd import EtcdStore
from tests.store_contract import check_contract


async def test_etcd_store_contract(etcd: EtcdProcess) -> None:
    store = EtcdStore(etcd.host, etcd.client_port)
    await store.connect()
    try:
        await check_contract(store)
    finally:
        await store.close()


async def test_unreachable_etcd_is_a_typed_retryable_error() -> None:
    store = EtcdStore("127.0.0.1", free_port(), timeout_s=1)
    with pytest.raises(StoreUnavailable) as info:
        await store.connect()
    assert info.value.retryable
