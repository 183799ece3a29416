"""gRPC edge of the control plane: validation, translation proto <-> domain, status codes.

No decisions are made here; servicers call the registry and map typed errors to status codes.
"""
