"""Key layout of everything Tokenfab keeps in etcd.

All keys live under one versioned root so that several Tokenfab installations (or a future
``v2`` layout) can share an etcd cluster without touching each other::

    /tokenfab/v1/nodes/<node_id>        NodeRecord (pydantic JSON): registration, state, cordon,
                                        per-device health. Written on registration and on state
                                        or health changes, never per heartbeat.

Later issues add their prefixes here (capacity requests, replicas, autoscaler decisions, leader
election); keep this docstring the single map of the keyspace.
"""

from __future__ import annotations

ROOT = "/tokenfab/v1/"
NODES = ROOT + "nodes/"


def node(node_id: str) -> str:
    return NODES + node_id


def node_id_of(key: str) -> str:
    if not key.startswith(NODES):
        raise ValueError(f"key {key!r} is not a node key")
    return key[len(NODES) :]
