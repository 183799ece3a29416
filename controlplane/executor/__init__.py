"""Executor: how replicas are started. ``engines`` builds engine launch specs (pure)."""

from controlplane.executor.engines import VISIBLE_DEVICES, EngineError, LaunchSpec, launch_spec

__all__ = ["VISIBLE_DEVICES", "EngineError", "LaunchSpec", "launch_spec"]
