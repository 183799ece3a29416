"""The token gateway: one authenticated, OpenAI-compatible endpoint in front of every tenant's
replicas (routing, admission, failover, demand signals, metering). See ``server.py`` for the
path of a call and docs/design/gateway.md for the design."""

from controlplane.gateway.server import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
