"""Jittered exponential backoff for reconnects: :class:`tokenfab.errors.Backoff`, where the control
plane's retrying loops take it from too (re-exported here, where the agent has always imported it)."""

from __future__ import annotations

from tokenfab.errors import Backoff

__all__ = ["Backoff"]
