"""Control-plane settings: the heartbeat interval it sends agents is refused outside the range the
agents clamp to, with an error naming the field."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from agents.runtime import HEARTBEAT_MAX_S, HEARTBEAT_MIN_S, clamp_interval
from controlplane import config
from controlplane.config import ControlPlaneConfig
from controlplane.domain.nodes import validation_message


@pytest.mark.parametrize("seconds", [0.0, 0.01, 0.099, 30.5, 3600.0, -1.0, math.nan, math.inf])
def test_a_heartbeat_interval_agents_would_clamp_is_refused_by_name(seconds: float) -> None:
    with pytest.raises(ValidationError) as info:
        ControlPlaneConfig(heartbeat_interval_s=seconds)
    field, message = validation_message(info.value)
    assert field == "heartbeat_interval_s"
    assert "outside 0.1-30 s" in message


@pytest.mark.parametrize("seconds", [0.1, 0.2, 1.0, 30.0])
def test_a_heartbeat_interval_in_range_is_kept_and_agents_keep_it_too(seconds: float) -> None:
    assert ControlPlaneConfig(heartbeat_interval_s=seconds).heartbeat_interval_s == seconds
    assert clamp_interval(seconds) == seconds  # what the agent will actually use


def test_the_range_is_the_agents_clamp() -> None:
    assert (config.HEARTBEAT_MIN_S, config.HEARTBEAT_MAX_S) == (HEARTBEAT_MIN_S, HEARTBEAT_MAX_S)
