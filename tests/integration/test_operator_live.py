"""The operator against a real Kubernetes API server: runs only when KUBECONFIG points to a
cluster (kind, k3d, a dev cluster); skipped otherwise. It installs the chart's CRDs, runs a real
control plane (real etcd) with the operator on a fresh namespace, and walks one CapacityRequest
through create -> status -> delete (finalizer) and the fleet mirror."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ControlPlaneFactory, wait_for

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster: set KUBECONFIG to run"
)
CRDS = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tokenfab" / "crds"


async def test_capacity_request_lifecycle(control_plane: ControlPlaneFactory, tmp_path: Path) -> None:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_kube_config()
    ext, core, custom = client.ApiextensionsV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
    for path in CRDS.glob("*.yaml"):
        body = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            assert exc.status == 409, exc  # already installed
    namespace = f"tokenfab-test-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - {{name: {namespace}, token: t}}\n")
    try:
        plane = await control_plane(tenants_file=tenants, operator_namespaces=[namespace])
        assert plane.operator is not None
        plane.operator.interval_s = 0.5
        body: dict[str, Any] = {
            "apiVersion": "tokenfab.io/v1alpha1", "kind": "CapacityRequest",
            "metadata": {"name": "live", "namespace": namespace},
            "spec": {"model": "qwen2.5-7b-instruct", "outputTokensPerSecond": 1000,
                     "latency": {"ttftP95Ms": 1000, "tpotP95Ms": 50}},
        }  # fmt: skip
        await asyncio.to_thread(
            custom.create_namespaced_custom_object,
            "tokenfab.io",
            "v1alpha1",
            namespace,
            "capacityrequests",
            body,
        )
        obj: dict[str, Any] = {}

        async def has_request_id() -> bool:
            nonlocal obj
            obj = await asyncio.to_thread(
                custom.get_namespaced_custom_object,
                "tokenfab.io",
                "v1alpha1",
                namespace,
                "capacityrequests",
                "live",
            )
            return bool((obj.get("status") or {}).get("requestId"))

        await wait_for(has_request_id, timeout=60, interval=0.5, what="status.requestId", detail=lambda: obj)
        assert "tokenfab.io/capacity-request" in obj["metadata"]["finalizers"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert obj["status"]["phase"] in {"Pending", "Placing", "Unsatisfiable", "Ready", "Degraded"}
        request_id = obj["status"]["requestId"]

        await asyncio.to_thread(
            custom.delete_namespaced_custom_object,
            "tokenfab.io",
            "v1alpha1",
            namespace,
            "capacityrequests",
            "live",
        )

        async def deleted() -> bool:
            try:
                await asyncio.to_thread(
                    custom.get_namespaced_custom_object,
                    "tokenfab.io",
                    "v1alpha1",
                    namespace,
                    "capacityrequests",
                    "live",
                )
            except ApiException as exc:
                assert exc.status == 404
                return True
            return False

        await wait_for(deleted, timeout=60, interval=0.5, what="the finalizer released (the object gone)")
        from controlplane.capacity.tenants import Tenant

        assert plane.capacity is not None
        cancelled = await plane.capacity.get(Tenant(namespace), request_id)
        assert not cancelled.active
    finally:
        core.delete_namespace(namespace)
