"""State store: one interface, an etcd implementation and an in-memory one.

See :mod:`controlplane.store.base` for the contract and :mod:`controlplane.store.keys` for the
key layout.
"""

from controlplane.store.base import KeyValue, Store, StoreUnavailable, WatchEvent, WatchEventKind
from controlplane.store.etcd import EtcdStore
from controlplane.store.memory import MemoryStore

__all__ = [
    "EtcdStore",
    "KeyValue",
    "MemoryStore",
    "Store",
    "StoreUnavailable",
    "WatchEvent",
    "WatchEventKind",
]
