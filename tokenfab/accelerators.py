"""How each vendor's accelerators appear to Ray and to an engine process; shared by the agent
(which starts the raylet) and the control plane (which places actors). Keys are vendor names.

* Ray resources: NVIDIA and MetaX are ``GPU`` (Ray's NVIDIA and MetaX accelerator managers),
  Ascend is ``NPU`` (Ray's NPU manager), Biren has no Ray manager and gets the custom resource
  ``biren_gpu`` from the agent.
* Visible devices: CUDA_VISIBLE_DEVICES (NVIDIA, MetaX), ASCEND_RT_VISIBLE_DEVICES (Ascend),
  SUPA_VISIBLE_DEVICES (Biren). Ray sets the first two itself from its own device pick unless
  ``RAY_EXPERIMENTAL_NOSET_<VAR>`` is set; Tokenfab sets that switch because the scheduler, not
  Ray, chooses the device indices.
* Node labels: the agent labels its raylet with the fleet node id, vendor, accelerator type and
  cluster, so actors and placement-group bundles can select the node the scheduler chose.
"""

from __future__ import annotations

from collections.abc import Iterable

VISIBLE_DEVICES = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "ascend": "ASCEND_RT_VISIBLE_DEVICES",
    "metax": "CUDA_VISIBLE_DEVICES",
    "biren": "SUPA_VISIBLE_DEVICES",
}
RAY_RESOURCE = {"nvidia": "GPU", "metax": "GPU", "ascend": "NPU", "biren": "biren_gpu"}
RAY_NOSET = {
    "CUDA_VISIBLE_DEVICES": "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES": "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES",
}
NODE_LABEL = "tokenfab.io/node"
VENDOR_LABEL = "tokenfab.io/vendor"
ACCELERATOR_LABEL = "tokenfab.io/accelerator"
CLUSTER_LABEL = "tokenfab.io/cluster"


def visible_devices_env(vendor: str, devices: Iterable[int]) -> dict[str, str]:
    """The environment that pins an engine to ``devices`` on a ``vendor`` node."""
    name = VISIBLE_DEVICES[vendor]
    env = {name: ",".join(str(d) for d in devices)}
    if name in RAY_NOSET:
        env[RAY_NOSET[name]] = "1"
    return env
