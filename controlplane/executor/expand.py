"""What a launch may ask for, and what the executor makes of it: the only way a replica's
command and environment come to exist.

Nothing from the wire becomes a command, an environment variable or a path:

* **Checks** (:func:`check_launch`): ids are short lowercase names (``[a-z0-9][a-z0-9.-]*``: no
  ``/``, no ``..``, so a replica id is safe as an actor name and a log file name); the vendor,
  accelerator, model and engine are known to the catalog; devices are distinct, as many as the
  tensor-parallel degree; Ray resources are the vendor's accelerator resource only.
* **Environment** (:func:`launch_env`): derived here from the checked fields: the vendor's
  visible-devices variable (and Ray's switch that leaves it alone), and the fencing ids.
* **Command** (:func:`expand_process`): the catalog's engine for that model and vendor, filled by
  :func:`controlplane.executor.engines.launch_spec` from the executor's own configuration: the
  operator-owned templates (for engines without a built-in command) and model paths (an
  allowlist: an engine the operator did not configure cannot be started).
* **Log files** (:func:`log_path`): ``<log dir>/<replica id>.log``, resolved and checked to stay
  inside the log directory.

Purely computational apart from :meth:`EngineConfig.load`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from controlplane.catalog.types import Catalog, CatalogError, Dtype, load_catalog
from controlplane.errors import InvalidArgument
from controlplane.executor.engines import EngineError, LaunchSpec, launch_spec
from tokenfab.accelerators import RAY_RESOURCE, visible_devices_env
from tokenfab.v1 import executor_pb2

ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,127}$")
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
MAX_DEVICES = 64
SIMULATED = "simulated"


@dataclass(frozen=True)
class EngineConfig:
    """The executor's own engine configuration (operator-owned, never from the wire)."""

    catalog: Catalog
    templates: dict[str, str] = field(default_factory=dict)
    model_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, catalog_file: Path | None = None, engines_file: Path | None = None) -> EngineConfig:
        """``engines_file``: YAML ``{templates: {engine: command}, model_paths: {model: path}}``."""
        catalog = load_catalog(catalog_file)
        if engines_file is None:
            return cls(catalog)
        try:
            data = yaml.safe_load(engines_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CatalogError(f"{engines_file}: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"templates", "model_paths"}:
            raise CatalogError(f"{engines_file}: expected only 'templates' and 'model_paths'")
        out = {}
        for key in ("templates", "model_paths"):
            section = data.get(key) or {}
            if not isinstance(section, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in section.items()
            ):
                raise CatalogError(f"{engines_file}: {key}: expected a map of names to strings")
            out[key] = dict(section)
        return cls(catalog, out["templates"], out["model_paths"])


def _id(value: str, name: str, pattern: re.Pattern[str] = ID) -> str:
    if not pattern.match(value):
        raise InvalidArgument(name, f"{value[:40]!r} is not a valid id ({pattern.pattern})")
    return value


def check_launch(launch: executor_pb2.ReplicaLaunch, catalog: Catalog) -> None:
    """InvalidArgument naming the first field that a launch may not carry."""
    _id(launch.replica_id, "launch.replica_id")
    _id(launch.request_id, "launch.request_id")
    _id(launch.node_id, "launch.node_id", NODE_ID)
    if launch.vendor not in RAY_RESOURCE:
        raise InvalidArgument("launch.vendor", f"unknown vendor {launch.vendor[:20]!r}")
    if launch.accelerator not in catalog.accelerators:
        raise InvalidArgument("launch.accelerator", f"not in the catalog: {launch.accelerator[:40]!r}")
    if launch.model not in catalog.models:
        raise InvalidArgument("launch.model", f"not in the catalog: {launch.model[:40]!r}")
    tp = launch.tensor_parallel
    devices = list(launch.devices)
    if not 1 <= tp <= MAX_DEVICES or len(devices) != tp or len(set(devices)) != tp:
        raise InvalidArgument("launch.devices", f"need {tp} distinct device indices, got {devices[:8]}")
    if any(d >= MAX_DEVICES for d in devices):
        raise InvalidArgument("launch.devices", f"indices below {MAX_DEVICES}")
    allowed = RAY_RESOURCE[launch.vendor]
    for name, amount in launch.resources.items():
        if name != allowed or not math.isfinite(amount) or not 0 < amount <= MAX_DEVICES:
            raise InvalidArgument(
                "launch.resources", f"only {allowed} (0 < amount <= {MAX_DEVICES}), got {name[:40]!r}"
            )
    kind = launch.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("launch.kind", "simulated or process")
    if kind == "simulated" and launch.engine != SIMULATED:
        raise InvalidArgument("launch.engine", "a simulated launch names the simulated engine")
    accelerator = catalog.accelerator(launch.accelerator)
    if accelerator.vendor.value != launch.vendor:
        raise InvalidArgument(
            "launch.vendor", f"{launch.accelerator} is a {accelerator.vendor.value} accelerator"
        )
    served = catalog.engines_for(catalog.model(launch.model), accelerator.vendor)
    if kind == "process" and launch.engine not in served:
        raise InvalidArgument(
            "launch.engine",
            f"{launch.engine[:40]!r} does not serve {launch.model} here (catalog: {', '.join(served)})",
        )


def launch_env(launch: executor_pb2.ReplicaLaunch) -> dict[str, str]:
    """The replica actor's environment, from checked fields only."""
    env = visible_devices_env(launch.vendor, launch.devices)
    env.update(
        {
            "TOKENFAB_NODE_ID": launch.node_id,  # the agent fences the replica's processes by these
            "TOKENFAB_REPLICA_ID": launch.replica_id,
            "TOKENFAB_GENERATION": str(launch.generation),
        }
    )
    return env


def expand_process(launch: executor_pb2.ReplicaLaunch, config: EngineConfig) -> LaunchSpec:
    """The command of a process engine, built by the executor; InvalidArgument naming the field."""
    check_launch(launch, config.catalog)
    process = launch.process
    catalog = config.catalog
    try:
        dtype = Dtype(process.dtype)
    except ValueError:
        raise InvalidArgument("launch.process.dtype", f"unknown dtype {process.dtype[:20]!r}") from None
    if not 0 < process.ready_timeout_s <= 86_400:
        raise InvalidArgument("launch.process.ready_timeout_s", "between 0 and 86400 seconds")
    try:
        return launch_spec(
            catalog, catalog.model(launch.model), catalog.accelerator(launch.accelerator), launch.engine,
            tp=launch.tensor_parallel, dtype=dtype, devices=list(launch.devices), port=process.port,
            model_path=config.model_paths.get(launch.model), templates=config.templates,
            max_num_batched_tokens=process.max_num_batched_tokens or None,
        )  # fmt: skip
    except EngineError as exc:
        raise InvalidArgument("launch.process", str(exc)) from None


def log_path(log_dir: str, replica_id: str) -> str:
    """``<log_dir>/<replica_id>.log``, refused (ValueError) if it would leave ``log_dir``."""
    _id(replica_id, "replica_id")
    root = os.path.realpath(log_dir)
    path = os.path.realpath(os.path.join(root, f"{replica_id}.log"))
    if os.path.dirname(path) != root:
        raise InvalidArgument("replica_id", "the log file would leave the log directory")
    return path
