"""The fleet: the node state machine and its types (pure), and the node registry (liveness in
memory, state in the store) in :mod:`controlplane.fleet.registry`.

The registry is not re-exported here: this ``__init__`` runs whenever any fleet module is
imported, and the pure core (:mod:`controlplane.fleet.states`, :mod:`controlplane.fleet.types`)
must not load the store with it. Import it from :mod:`controlplane.fleet.registry`.
"""

from controlplane.fleet.states import TRANSITIONS, IllegalTransition, check_transition
from controlplane.fleet.types import FleetTiming, NodeView

__all__ = ["TRANSITIONS", "FleetTiming", "IllegalTransition", "NodeView", "check_transition"]
