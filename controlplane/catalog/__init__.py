"""Accelerator and model catalog, and the performance model built on it (pure, no I/O)."""

from controlplane.catalog.perf import (
    Calibration,
    PerfAssumptions,
    Prediction,
    Workload,
    predict,
    smallest_feasible_tp,
)
from controlplane.catalog.types import AcceleratorType, Catalog, CatalogError, Dtype, ModelSpec, load_catalog

__all__ = [
    "AcceleratorType",
    "Calibration",
    "Catalog",
    "CatalogError",
    "Dtype",
    "ModelSpec",
    "PerfAssumptions",
    "Prediction",
    "Workload",
    "load_catalog",
    "predict",
    "smallest_feasible_tp",
]
