"""The fleet: node registry (liveness in memory, state in the store) and the node state machine."""

from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.states import TRANSITIONS, IllegalTransition, check_transition
from controlplane.fleet.types import FleetTiming, NodeView

__all__ = ["TRANSITIONS", "FleetTiming", "IllegalTransition", "NodeRegistry", "NodeView", "check_transition"]
