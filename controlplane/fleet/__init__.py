"""The fleet: node registry (liveness in memory, state in the store) and the node state machine."""

from controlplane.fleet.registry import FleetTiming, NodeRegistry, NodeView
from controlplane.fleet.states import TRANSITIONS, IllegalTransition, check_transition

__all__ = ["TRANSITIONS", "FleetTiming", "IllegalTransition", "NodeRegistry", "NodeView", "check_transition"]
