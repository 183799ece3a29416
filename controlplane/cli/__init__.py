"""The ``tokenfab`` command.

``GRPC_ENABLE_FORK_SUPPORT`` is switched off before anything imports gRPC: ``tokenfab up`` forks
its children with a ``preexec_fn`` (PR_SET_PDEATHSIG) while its own gRPC threads run, and gRPC
core's fork handlers then restart its event-engine threads in the half-made child, which crashed
there now and then (segfault in ``event_engine``, the agent gone without a line of output). No
Tokenfab process uses gRPC across a fork, so the handlers have nothing to protect.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
