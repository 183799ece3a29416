"""Engine launch specs: the exact command, environment and health check that start one replica's
OpenAI-compatible server on a vendor's accelerators. Purely computational.

* **vLLM family** (built in): vLLM on NVIDIA, vllm-ascend on Ascend and vllm-metax on MetaX are
  all started with ``vllm serve`` (the vendor backends are vLLM platform plugins), restricted to
  the replica's devices by the vendor's visible-devices variable (CUDA_VISIBLE_DEVICES,
  ASCEND_RT_VISIBLE_DEVICES; MetaX also needs MACA_PATH). Health: ``GET /health``.
* **Template engines** (operator-configured): MindIE and Biren's suinfer-llm server are started
  from a command template the operator supplies (their CLIs are not publicly documented well
  enough to hard-code), e.g. ``br_api_server --model {model_path} --tp {tp} --port {port}``.
  Placeholders: model_path, served_name, tp, port, host, max_num_seqs, max_model_len, dtype.
  Without a template the spec is refused with :class:`EngineError` naming the engine.

Where a replica listens and what it advertises: loopback unless the node says otherwise. On
Kubernetes the agent knows its node's IP (``--ray-node-ip`` / ``TOKENFAB_RAY_NODE_IP``, from the
downward API) and hands it to its raylet, whose workers (the replica actors) inherit it; an engine
started there listens on and advertises that IP (:func:`advertised_host`), so the gateway on
another node can reach it. The executor expands the command before it knows the node, so a
:class:`LaunchSpec` remembers which arguments hold the host (``host_slots``) and
:meth:`LaunchSpec.on_host` fills them again on the node. ``tokenfab up`` sets no node IP: its
engines stay on loopback.

FP8 on the vLLM family adds ``--quantization fp8`` (weights quantised at load time); INT8 needs
a pre-quantised checkpoint (``model_path``), whose config tells vLLM the scheme.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.catalog.types import AcceleratorType, Catalog, Dtype, ModelSpec
from controlplane.domain.nodes import Vendor
from tokenfab import accelerators
from tokenfab.errors import PermanentError

VISIBLE_DEVICES: dict[Vendor, str] = {Vendor(name): var for name, var in accelerators.VISIBLE_DEVICES.items()}
VLLM_FAMILY = {"vllm": Vendor.NVIDIA, "vllm-ascend": Vendor.ASCEND, "vllm-metax": Vendor.METAX}
TEMPLATE_ENGINES = {"mindie", "suinfer-llm"}
VLLM_DTYPE = {Dtype.BF16: "bfloat16", Dtype.FP16: "float16", Dtype.FP8: "bfloat16", Dtype.INT8: "auto"}
MACA_PATH = "/opt/maca"
LOOPBACK = "127.0.0.1"
NODE_IP_ENV = "TOKENFAB_RAY_NODE_IP"  # set by the agent for its raylet (and so for its actors)
HOST = "{host}"


class EngineError(PermanentError, ValueError):
    """The replica cannot be launched as asked; the message names the field."""


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    engine: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    host: str = LOOPBACK
    port: int = 8000
    health_path: str = "/health"
    ready_timeout_s: float = 900.0  # weights of a large model take minutes to load
    host_slots: tuple[tuple[int, str], ...] = ()  # (argv index, that argument with {host} unfilled)

    @property
    def endpoint(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.endpoint + self.health_path

    @property
    def base_url(self) -> str:
        return self.endpoint + "/v1"

    def on_host(self, host: str) -> LaunchSpec:
        """The same launch listening on (and advertising) ``host``."""
        if host == self.host:
            return self
        argv = list(self.argv)
        for index, part in self.host_slots:
            argv[index] = part.replace(HOST, host)
        return dataclasses.replace(self, argv=tuple(argv), host=host)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def advertised_host(environ: Mapping[str, str]) -> str:
    """The address a replica on this node listens on and advertises: the node IP the agent was
    given, or loopback. A value that is not an IP address is refused by the variable's name."""
    raw = environ.get(NODE_IP_ENV, "").strip()
    if not raw:
        return LOOPBACK
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise EngineError(f"{NODE_IP_ENV}: {raw[:64]!r} is not an IP address") from None


def launch_spec(
    catalog: Catalog,
    model: ModelSpec,
    accelerator: AcceleratorType,
    engine: str,
    *,
    tp: int,
    dtype: Dtype,
    devices: Sequence[int],
    port: int,
    host: str = LOOPBACK,
    model_path: str | None = None,
    max_num_seqs: int = 256,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    templates: Mapping[str, str] | None = None,
    max_num_batched_tokens: int | None = None,  # the prefill chunk; None: the engine's default
) -> LaunchSpec:
    vendor = accelerator.vendor
    if engine not in catalog.engines_for(model, vendor):
        served = ", ".join(catalog.engines_for(model, vendor)) or "none"
        raise EngineError(
            f"engine: {engine!r} does not serve {model.name} on {vendor.value} (catalog: {served})"
        )
    if dtype not in model.dtypes or dtype not in accelerator.dtypes:
        raise EngineError(f"dtype: {dtype.value} is not available for {model.name} on {accelerator.name}")
    if tp < 1 or model.attention_heads % tp:
        raise EngineError(
            f"tp: {tp} does not divide the {model.attention_heads} attention heads of {model.name}"
        )
    if len(devices) != tp or len(set(devices)) != tp or min(devices, default=0) < 0:
        raise EngineError(f"devices: need {tp} distinct device indices, got {list(devices)}")
    if not 1024 <= port <= 65535:
        raise EngineError(f"port: {port} is outside 1024-65535")
    if not 0.1 <= gpu_memory_utilization <= 0.99:
        raise EngineError("gpu_memory_utilization: must be between 0.1 and 0.99")
    context = min(max_model_len or model.context_length, model.context_length)
    env = {VISIBLE_DEVICES[vendor]: ",".join(str(d) for d in devices)}
    path = model_path or model.hf_name or model.name

    if engine in VLLM_FAMILY:
        if dtype is Dtype.INT8 and model_path is None:
            raise EngineError("model_path: int8 needs a pre-quantised checkpoint; give its path")
        argv = [
            "vllm", "serve", path,
            "--served-model-name", model.name,
            "--host", host, "--port", str(port),
            "--tensor-parallel-size", str(tp),
            "--dtype", VLLM_DTYPE[dtype],
            "--max-num-seqs", str(max_num_seqs),
            "--max-model-len", str(context),
            "--gpu-memory-utilization", f"{gpu_memory_utilization:g}",
        ]  # fmt: skip
        if max_num_batched_tokens is not None:
            argv += ["--max-num-batched-tokens", str(max(max_num_batched_tokens, 64))]
        if dtype is Dtype.FP8:
            argv += ["--quantization", "fp8"]
        if vendor is Vendor.METAX:
            env["MACA_PATH"] = MACA_PATH
        slots: tuple[tuple[int, str], ...] = ((argv.index("--host") + 1, HOST),)
        return LaunchSpec(engine, tuple(argv), env, host, port, host_slots=slots)

    template = (templates or {}).get(engine)
    if not template:
        raise EngineError(
            f"engine: {engine!r} needs a command template in the executor configuration "
            f"(placeholders: model_path, served_name, tp, port, host, max_num_seqs, max_model_len, dtype)"
        )
    values = {
        "model_path": path,
        "served_name": model.name,
        "tp": tp,
        "port": port,
        "host": host,
        "max_num_seqs": max_num_seqs,
        "max_model_len": context,
        "dtype": dtype.value,
    }
    try:
        parts = shlex.split(template)
        argv = [part.format(**values) for part in parts]
        slots = tuple(
            (i, part.format(**{**values, "host": HOST})) for i, part in enumerate(parts) if HOST in part
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise EngineError(f"templates.{engine}: cannot fill {template!r}: {exc}") from None
    return LaunchSpec(engine, tuple(argv), env, host, port, host_slots=slots)
