"""Tokenfab's shared kernel: the generated wire types (``tokenfab.v1``), logging, TLS and version.

Both the control plane (``controlplane``) and the node agent (``agents``) import from here; this
package imports neither of them (an import-linter contract enforces it).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
