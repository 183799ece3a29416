"""The Helm chart, rendered by the real Helm engine (helm-python-sdk embeds Helm v4's Go library;
no helm binary, no cluster) for the default values and other value sets; every manifest is
validated against the Kubernetes OpenAPI schemas (kubernetes-validate, the newest versions it
knows); the CRDs and the example CapacityRequests are checked against each other; bad values
are refused by values.schema.json."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tokenfab"
EXAMPLES = sorted((ROOT / "examples").glob("capacityrequest*.yaml"))
KUBE_VERSIONS = ("1.37.0", "1.36.0", "1.35.0")
# kinds from other projects' CRDs: no schema in kubernetes-validate (checked by shape below)
FOREIGN_KINDS = {"ServiceMonitor", "Certificate", "Issuer", "RayCluster"}
TOKEN_DIGEST = hashlib.sha256(b"search-token").hexdigest()

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-etcd-tls": {
        "etcd": {
            "bundled": {"enabled": False},
            "external": {
                "endpoints": ["etcd-0.db.svc:2379", "etcd-1.db.svc:2379"],
                "tlsSecret": "etcd-client",
            },
        }
    },
    "kuberay": {
        "cluster": {"name": "bj-a", "region": "cn-north"},
        "ray": {"kuberay": {"enabled": True}},
        "agents": {"nvidia": {"enabled": True, "nodes": ["gpu-a-1", "gpu-a-2"]}},
    },
    "mtls-cert-manager": {
        "tls": {"source": "certManager"},
        "agents": {
            "biren": {"enabled": True, "nodes": ["br-1"]},
            "metax": {"enabled": True, "nodes": ["mx-1", "mx-2"], "devicePlugin": {"count": 8}},
            "ray": {"allowPrivileged": True},  # Biren without a device plugin count
        },
        "ray": {"clusters": [{"name": "default", "address": "ray-head.ray.svc:6379"}]},
        "serviceMonitor": {"enabled": True},
    },
    "cert-manager-own-issuer-kuberay": {
        "tls": {"source": "certManager", "certManager": {"issuerRef": {"name": "corp-ca"}}},
        "ray": {"kuberay": {"enabled": True}},
        "agents": {"nvidia": {"enabled": True, "nodes": ["gpu-a-1"], "devicePlugin": {"count": 8}}},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    },
    "single-vendor-ascend": {
        "agents": {"ascend": {"enabled": True, "nodes": ["npu-1"]}, "ray": {"allowPrivileged": True}},
        "ray": {"clusters": [{"name": "default", "address": "ray-head.ray.svc:6379"}]},
        "controlPlane": {
            "tenants": {
                "entries": [{"name": "search", "token_sha256": TOKEN_DIGEST, "max_accelerators": 64}]
            },
            "operators": {"entries": [{"name": "alice", "role": "admin", "token_sha256": TOKEN_DIGEST}]},
        },
    },
    "hostpath-identity-host-network": {
        "agents": {
            "identity": {"source": "hostPath"},
            "ray": {"hostNetwork": True},
            "ascend": {"enabled": True, "devicePlugin": {"count": 8}},
            "nvidia": {"enabled": True},
        },
        "ray": {"kuberay": {"enabled": True}},
        "networkPolicy": {"nodeCIDRs": ["10.0.0.0/16"], "rayFrom": [{"ipBlock": {"cidr": "10.9.0.0/24"}}]},
    },
    "plaintext-existing-secrets-no-operator": {
        "tls": {"enabled": False},
        "gateway": {"enabled": False},  # it refuses plaintext beyond loopback
        "agents": {"metax": {"enabled": True}},
        "controlPlane": {
            "tenants": {"existingSecret": "tenants"},
            "operators": {"existingSecret": "operators"},
            "operator": {"enabled": False},
        },
        "networkPolicy": {"enabled": False},
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values=values, name="tf", namespace="tokenfab")
    docs: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def crds() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))}


def test_lint_reports_no_errors() -> None:
    report = helm_python.lint(str(CHART), strict=False)
    errors = [m for m in report["messages"] if m["severity"] >= 3] + list(report["errors"])
    assert not errors, errors
    assert report["total_charts_linted"] == 1


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    docs = render(VALUE_SETS[name])
    assert docs
    checked = 0
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except SchemaNotFoundError:
                assert doc["kind"] in FOREIGN_KINDS, f"no schema for {doc['kind']}"
                assert doc["metadata"]["name"] and doc["spec"]
                break
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']} on {version}: {exc}"
                ) from exc
            checked += 1
    assert checked >= 3 * len(KUBE_VERSIONS)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crds_are_valid_custom_resource_definitions(version: str) -> None:
    for name, crd in crds().items():
        kubernetes_validate.validate(crd, version, strict=True)
        assert crd["metadata"]["name"] == name.removesuffix(".yaml")


def _structural(schema: Any) -> Any:
    """The CRD's openAPIV3Schema as plain JSON Schema (x-kubernetes-* extensions dropped)."""
    if isinstance(schema, dict):
        return {k: _structural(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [_structural(v) for v in schema]
    return schema


def cr_validator() -> jsonschema.Draft4Validator:
    crd = crds()["capacityrequests.tokenfab.io.yaml"]
    (version,) = crd["spec"]["versions"]
    return jsonschema.Draft4Validator(_structural(version["schema"]["openAPIV3Schema"]))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_capacity_requests_match_the_crd_and_the_api(example: Path) -> None:
    from controlplane.k8s.crd import spec_from_cr

    doc = yaml.safe_load(example.read_text())
    cr_validator().validate(doc)
    spec = spec_from_cr(doc)  # and the control plane's own validation accepts it
    assert spec.output_tokens_per_second == doc["spec"]["outputTokensPerSecond"]


def test_the_crd_refuses_what_the_api_refuses() -> None:
    validator = cr_validator()
    good = yaml.safe_load(EXAMPLES[0].read_text())
    for path, value in [
        (("spec", "outputTokensPerSecond"), 0),
        (("spec", "latency", "tpotP95Ms"), -1),
        (("spec", "allowedVendors"), ["amd"]),
        (("spec", "model"), ""),
        (("spec", "priority"), 5000),
    ]:
        bad = copy.deepcopy(good)
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        errors = list(validator.iter_errors(bad))
        assert errors, path
    missing = copy.deepcopy(good)
    del missing["spec"]["latency"]
    assert list(validator.iter_errors(missing))


def test_printer_columns_and_status_subresource() -> None:
    cr = crds()["capacityrequests.tokenfab.io.yaml"]["spec"]["versions"][0]
    assert [c["name"] for c in cr["additionalPrinterColumns"]] == [
        "MODEL", "TARGET-TPS", "READY-TPS", "REPLICAS", "PHASE", "AGE",
    ]  # fmt: skip
    assert cr["subresources"] == {"status": {}}
    node = crds()["acceleratornodes.tokenfab.io.yaml"]
    assert node["spec"]["scope"] == "Cluster"
    assert [c["name"] for c in node["spec"]["versions"][0]["additionalPrinterColumns"]] == [
        "VENDOR", "ACCELERATOR", "DEVICES", "STATE", "LEASE-END", "AGE",
    ]  # fmt: skip


def test_default_install_shape() -> None:
    docs = render({})
    (deployment,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "tf-tokenfab"]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # TLS by default, and the kubelet's gRPC probe cannot speak TLS
    assert container["readinessProbe"]["tcpSocket"] == {"port": 50051}
    assert container["livenessProbe"]["tcpSocket"] == {"port": 50051}
    assert "--etcd=tf-tokenfab-etcd:2379" in container["args"]
    assert "--operator-namespace=tokenfab" in container["args"]
    assert container["resources"]["limits"]
    (pdb,) = [d for d in by_kind(docs, "PodDisruptionBudget") if d["metadata"]["name"] == "tf-tokenfab"]
    assert pdb["spec"]["minAvailable"] == 2
    (etcd,) = by_kind(docs, "StatefulSet")
    assert etcd["spec"]["replicas"] == 3
    args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
    cluster = next(a for a in args if a.startswith("--initial-cluster="))
    assert cluster.count("=https://") == 3
    assert not by_kind(docs, "DaemonSet")  # every vendor's agent is opt-in
    services = {d["metadata"]["name"] for d in by_kind(docs, "Service")}
    assert {"tf-tokenfab", "tf-tokenfab-metrics"} <= services
    assert by_kind(docs, "NetworkPolicy")
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    assert yaml.safe_load(secrets["tf-tokenfab-tenants"]["stringData"]["tenants.yaml"]) == {"tenants": []}
    assert yaml.safe_load(secrets["tf-tokenfab-operators"]["stringData"]["operators.yaml"]) == {
        "operators": []
    }
    # secure by default: without cert-manager the chart's certgen Job issues the certificates
    assert [j["metadata"]["name"] for j in by_kind(docs, "Job")] == ["tf-tokenfab-certgen"]
    assert "--tls-client-ca=/etc/tokenfab/tls/ca.crt" in container["args"]
    assert "--insecure" not in container["args"]


def test_external_etcd_and_no_bundled_one() -> None:
    docs = render(VALUE_SETS["external-etcd-tls"])
    assert not by_kind(docs, "StatefulSet")
    (deployment,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "tf-tokenfab"]
    pod = deployment["spec"]["template"]["spec"]
    assert "--etcd=etcd-0.db.svc:2379,etcd-1.db.svc:2379" in pod["containers"][0]["args"]  # every member
    assert {"name": "etcd-tls", "secret": {"secretName": "etcd-client"}} in pod["volumes"]
    assert {"--etcd-ca=/etc/tokenfab/etcd-tls/ca.crt", "--etcd-cert=/etc/tokenfab/etcd-tls/tls.crt",
            "--etcd-key=/etc/tokenfab/etcd-tls/tls.key"} <= set(pod["containers"][0]["args"])  # fmt: skip


def test_each_vendor_agent_gets_its_tools_and_nothing_more() -> None:
    docs = render(VALUE_SETS["single-vendor-ascend"])
    (ascend,) = by_kind(docs, "DaemonSet")
    pod = ascend["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend910"}
    paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert paths == {"/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"}
    mounts = pod["containers"][0]["volumeMounts"]
    assert all(m.get("readOnly") for m in mounts if m["name"] not in ("tmp", "shm", "models"))
    assert pod["automountServiceAccountToken"] is False
    assert "--backend=ascend" in pod["containers"][0]["args"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TOKENFAB_RAY_ADDRESS"] == "ray-head.ray.svc:6379"
    assert "hostNetwork" not in pod  # the raylet lives in the pod network by default
    assert pod["containers"][0]["securityContext"]["privileged"] is True  # no device plugin count

    nvidia = by_kind(render(VALUE_SETS["kuberay"]), "DaemonSet")[0]["spec"]["template"]["spec"]
    assert nvidia["runtimeClassName"] == "nvidia"
    assert "privileged" not in nvidia["containers"][0]["securityContext"]  # NVML needs no privilege
    assert not [v for v in nvidia["volumes"] if "hostPath" in v]

    two = {
        d["metadata"]["labels"]["tokenfab.io/vendor"]: d
        for d in by_kind(render(VALUE_SETS["mtls-cert-manager"]), "DaemonSet")
    }  # one DaemonSet per node: the last node of each vendor
    assert set(two) == {"biren", "metax"}
    biren = {
        v["hostPath"]["path"] for v in two["biren"]["spec"]["template"]["spec"]["volumes"] if "hostPath" in v
    }
    assert biren == {"/dev/biren"}
    metax = {
        v["hostPath"]["path"] for v in two["metax"]["spec"]["template"]["spec"]["volumes"] if "hostPath" in v
    }
    assert metax == {"/opt/maca", "/usr/bin/mx-smi"}
    metax_container = two["metax"]["spec"]["template"]["spec"]["containers"][0]
    assert "privileged" not in metax_container["securityContext"]  # devices from the device plugin
    assert metax_container["resources"]["limits"]["metax-tech.com/gpu"] == 8
    assert two["biren"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] is True


def test_kuberay_and_executors() -> None:
    docs = render(VALUE_SETS["kuberay"])
    (ray,) = by_kind(docs, "RayCluster")
    assert ray["spec"]["rayVersion"] == "2.60.0"
    executors = [d for d in by_kind(docs, "Deployment") if "executor" in d["metadata"]["name"]]
    assert [e["metadata"]["name"] for e in executors] == ["tf-tokenfab-executor-bj-a"]
    args = executors[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--ray-address=tf-tokenfab-ray-head-svc:6379" in args
    (cp,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "tf-tokenfab"]
    assert (
        "--executor=bj-a=tf-tokenfab-executor-bj-a:50061"
        in cp["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_mutual_tls_everywhere() -> None:
    docs = render(VALUE_SETS["mtls-cert-manager"])
    (cp,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "tf-tokenfab"]
    args = cp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tls-client-ca=/etc/tokenfab/tls/ca.crt" in args
    assert "--executor-tls-ca=/etc/tokenfab/tls/ca.crt" in args
    (executor,) = [d for d in by_kind(docs, "Deployment") if "executor" in d["metadata"]["name"]]
    assert (
        "--tls-client-ca=/etc/tokenfab/tls/ca.crt"
        in executor["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    agents = by_kind(docs, "DaemonSet")
    assert len(agents) == 3  # one per listed node
    for agent in agents:
        agent_args = agent["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--tls-cert=/etc/tokenfab/tls/tls.crt" in agent_args
    assert by_kind(docs, "ServiceMonitor")
    assert not by_kind(docs, "Job")  # cert-manager, not the chart's certgen Job


def test_plaintext_only_by_request() -> None:
    docs = render(VALUE_SETS["plaintext-existing-secrets-no-operator"])
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for d in by_kind(docs, kind):
            pod = d["spec"]["template"]["spec"]
            assert not [v for v in pod.get("volumes", []) if v["name"] == "tls"], d["metadata"]["name"]
    servers = [d for d in by_kind(docs, "Deployment")]
    assert servers and all(
        "--insecure" in d["spec"]["template"]["spec"]["containers"][0]["args"] for d in servers
    )
    for d in servers:
        probe = d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert "grpc" in probe, d["metadata"]["name"]  # plaintext: the real gRPC health check
    assert not by_kind(docs, "Certificate") and not by_kind(docs, "Job")


def test_rbac_is_least_privilege() -> None:
    docs = render({})
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    # the certgen Job's Role: Secrets only, and only while the install/upgrade hook runs
    (certgen,) = [d for d in roles if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert certgen["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "update", "delete"]}
    ]
    assert "hook-succeeded" in certgen["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    rules = [r for d in roles if d is not certgen for r in d["rules"]]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert set(rule["apiGroups"]) <= {"tokenfab.io", "events.k8s.io"}, rule
    cluster_wide = [r for d in by_kind(docs, "ClusterRole") for r in d["rules"]]
    assert all(set(r["resources"]) <= {"acceleratornodes", "acceleratornodes/status"} for r in cluster_wide)
    assert not by_kind(render(VALUE_SETS["plaintext-existing-secrets-no-operator"]), "ClusterRole")


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"controlPlane": {"replicas": 0}}, "/controlPlane/replicas"),
        ({"etcd": {"bundled": {"enabled": False}}}, "/etcd/external"),
        ({"tls": {"mutual": True}}, "/tls"),
        ({"tls": {"source": "vault"}}, "/tls/source"),
        ({"agents": {"nvidia": {"enabled": True, "nodes": ["Bad_Node"]}}}, "/agents/nvidia/nodes/0"),
        ({"agents": {"identity": {"source": "csi"}}}, "/agents/identity/source"),
        ({"agents": {"ray": {"allowPrivileged": "yes"}}}, "/agents/ray/allowPrivileged"),
        ({"tls": {"clients": ["Bad Name"]}}, "/tls/clients/0"),
        (
            {
                "controlPlane": {
                    "operators": {"entries": [{"name": "x", "role": "root", "token_sha256": TOKEN_DIGEST}]}
                }
            },
            "/controlPlane/operators/entries/0/role",
        ),
        ({"agents": {"ascend": {"enabled": True, "driverPath": "usr/local"}}}, "/agents/ascend/driverPath"),
        ({"etcd": {"bundled": {"replicas": 2}}}, "/etcd/bundled/replicas"),
        (
            {"controlPlane": {"tenants": {"entries": [{"name": "x", "token_sha256": "clear-token"}]}}},
            "/controlPlane/tenants/entries/0/token_sha256",
        ),
        ({"controlPlane": {"engineMode": "fast"}}, "/controlPlane/engineMode"),
        ({"imageTag": "latest"}, "imageTag"),
    ],
)
def test_bad_values_are_refused_by_the_schema(values: dict[str, Any], where: str) -> None:
    chart = helm_python.Chart.load(str(CHART))
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values=values, name="tf", namespace="tokenfab")
    assert where in str(err.value), str(err.value)
