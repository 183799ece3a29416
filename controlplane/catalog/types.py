"""The accelerator and model catalog: typed, validated, shipped as YAML, overridable.

``load_catalog()`` reads the packaged ``catalog.yaml``; ``load_catalog(override)`` merges an
operator's file over it entry by entry and field by field (an override that only sets
``price_per_hour: 2.9`` for ``H100`` keeps every other H100 figure). Errors name the entry and
field: ``accelerators.H100.bandwidth_tb_s: Input should be greater than 0``.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controlplane.domain.nodes import Vendor, validation_message
from tokenfab.errors import PermanentError

GiB = 1024**3


class CatalogError(PermanentError, ValueError):
    """The catalog (or an operator's override) is malformed; the message names entry and field."""


class Dtype(StrEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bytes_per_param(self) -> float:
        return {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}[self.value]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AcceleratorType(_Entry):
    name: str
    vendor: Vendor
    memory_gib: Annotated[float, Field(gt=0, le=2048)]
    bandwidth_tb_s: Annotated[float, Field(gt=0, le=100)]
    tflops_bf16: Annotated[float, Field(gt=0, le=100_000)]
    interconnect: str = ""
    dtypes: tuple[Dtype, ...] = (Dtype.BF16, Dtype.FP16)
    price_per_hour: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    uncertain: bool = False

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GiB

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_tb_s * 1e12

    @property
    def flops(self) -> float:
        return self.tflops_bf16 * 1e12


class ModelSpec(_Entry):
    name: str
    hf_name: str = ""
    parameters_b: Annotated[float, Field(gt=0, le=100_000)]
    active_parameters_b: Annotated[float, Field(gt=0, le=100_000)] | None = None  # MoE
    layers: Annotated[int, Field(ge=1, le=1000)]
    hidden_size: Annotated[int, Field(ge=1)]
    attention_heads: Annotated[int, Field(ge=1)]
    kv_heads: Annotated[int, Field(ge=1)]
    head_dim: Annotated[int, Field(ge=1)]
    kv_bytes_per_token: Annotated[int, Field(ge=1)]
    context_length: Annotated[int, Field(ge=1)]
    dtypes: tuple[Dtype, ...] = (Dtype.BF16,)
    vendors: tuple[Vendor, ...] = tuple(Vendor)
    engines: dict[Vendor, tuple[str, ...]] = Field(default_factory=dict)  # narrows the vendor default

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.active_parameters_b is not None and self.active_parameters_b > self.parameters_b:
            raise ValueError("active_parameters_b must not exceed parameters_b")
        if self.attention_heads % self.kv_heads:
            raise ValueError("attention_heads must be a multiple of kv_heads")
        return self

    @property
    def active_parameters(self) -> float:
        return (self.active_parameters_b or self.parameters_b) * 1e9

    @property
    def parameters(self) -> float:
        return self.parameters_b * 1e9

    def weight_bytes(self, dtype: Dtype) -> float:
        return self.parameters * dtype.bytes_per_param

    def active_weight_bytes(self, dtype: Dtype) -> float:
        return self.active_parameters * dtype.bytes_per_param

    def tp_sizes(self, limit: int = 64) -> list[int]:
        """Tensor-parallel sizes this model can use: powers of two dividing the attention heads."""
        sizes, tp = [], 1
        while tp <= limit:
            if self.attention_heads % tp == 0:
                sizes.append(tp)
            tp *= 2
        return sizes


class Catalog(_Entry):
    accelerators: dict[str, AcceleratorType]
    models: dict[str, ModelSpec]
    engines: dict[Vendor, tuple[str, ...]]

    def accelerator(self, name: str) -> AcceleratorType:
        try:
            return self.accelerators[name]
        except KeyError:
            raise KeyError(
                f"unknown accelerator type {name!r}; known: {', '.join(sorted(self.accelerators))}"
            ) from None

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}") from None

    def engines_for(self, model: ModelSpec, vendor: Vendor) -> tuple[str, ...]:
        """Engines that serve ``model`` on ``vendor``'s accelerators (empty: not supported)."""
        if vendor not in model.vendors:
            return ()
        return model.engines.get(vendor, self.engines.get(vendor, ()))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files("controlplane.catalog").joinpath("catalog.yaml").read_text()
        source = "packaged catalog"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogError(f"{path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a mapping with accelerators, models and engines")
    unknown = set(data) - {"accelerators", "models", "engines"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown)}")
    return data, source


def load_catalog(override: Path | None = None) -> Catalog:
    data, source = _read(None)
    if override is not None:
        extra, source = _read(override)
        data = _merge(data, extra)
    raw: dict[str, Any] = {"accelerators": {}, "models": {}, "engines": data.get("engines", {})}
    for section in ("accelerators", "models"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise CatalogError(f"{source}: {section} must be a mapping of name -> entry")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise CatalogError(f"{source}: {section}.{name} must be a mapping")
            raw[section][name] = {"name": str(name), **entry}
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        field, message = validation_message(exc)
        raise CatalogError(f"{source}: {field}: {message}") from None
