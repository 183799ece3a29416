"""Tokenfab control plane.

Layers, from the top (import-linter enforces that each imports only those below it):

``cli``       the ``tokenfab`` command (typer + rich)
``embedded``  ``tokenfab up``: etcd child process, control plane, simulated agents
``api``       gRPC servicers: validation, translation proto <-> domain, status codes
``fleet``     node registry and node state machine (liveness in memory, state in the store)
``store``     the Store interface with etcd (aetcd) and in-memory implementations
``domain``    pydantic domain types, pure
"""
