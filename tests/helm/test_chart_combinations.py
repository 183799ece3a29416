"""Value combinations the chart's documentation allows, rendered by the real Helm engine
(helm-python-sdk, as in test_chart.py): each renders a release Kubernetes would accept (no two
objects of one kind, name and namespace) or is refused with a message naming the value; and the
executors' NetworkPolicy is no wider than its comment says.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from helm_python.errors import HelmError

from tests.helm.test_chart import VALUE_SETS, by_kind, render

FULL = "tf-tokenfab"
API_PORT = 50061

COMBINATIONS: dict[str, dict[str, Any]] = {
    # KubeRay for this cluster and an existing Ray cluster for another one
    "kuberay-and-existing-cluster": {
        "cluster": {"name": "bj-a"},
        "ray": {"kuberay": {"enabled": True}, "clusters": [{"name": "sh-b", "address": "ray.sh-b.svc:6379"}]},
        "agents": {"nvidia": {"enabled": True, "nodes": ["gpu-1"]}},
    },
    "two-vendors-two-nodes-cert-manager": {
        "tls": {"source": "certManager"},
        "agents": {
            "nvidia": {"enabled": True, "nodes": ["gpu-1"]},
            "metax": {"enabled": True, "nodes": ["mx-1"], "devicePlugin": {"count": 8}},
        },
    },
    "operator-in-two-namespaces": {"controlPlane": {"operator": {"namespaces": ["team-a", "team-b"]}}},
    "one-control-plane-instance": {
        "controlPlane": {"replicas": 1, "podDisruptionBudget": {"minAvailable": 0}}
    },
    "plaintext-kuberay": {
        "tls": {"enabled": False},
        "gateway": {"enabled": False},
        "ray": {"kuberay": {"enabled": True}},
        "agents": {"nvidia": {"enabled": True}},
    },
    **VALUE_SETS,
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_no_two_objects_share_kind_name_and_namespace(name: str) -> None:
    docs = render(COMBINATIONS[name])
    keys = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", "")) for d in docs]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (  # the KubeRay cluster is cluster.name: listing that name again made two executors
            {"ray": {"kuberay": {"enabled": True}, "clusters": [{"name": "default", "address": "r:6379"}]}},
            'ray.clusters: "default" is also cluster.name',
        ),
        (
            {"ray": {"clusters": [{"name": "a", "address": "r:6379"}, {"name": "a", "address": "s:6379"}]}},
            'ray.clusters: the name "a" is given twice',
        ),
        (  # one node, two agents claiming its identity (and, with cert-manager, two Certificates)
            {
                "tls": {"source": "certManager"},
                "agents": {
                    "nvidia": {"enabled": True, "nodes": ["n1"]},
                    "metax": {"enabled": True, "nodes": ["n1"], "devicePlugin": {"count": 1}},
                },
            },
            'agents.metax.nodes: node "n1" is also listed under agents.nvidia.nodes',
        ),
        (  # a Service name may have 63 characters; cluster.name may have 63 by the schema
            {"cluster": {"name": "a" * 50}, "ray": {"kuberay": {"enabled": True}}},
            "longer than the 63 characters a Service name may have",
        ),
        (  # one replica and the default minAvailable 2: a PDB no eviction can ever satisfy
            {"controlPlane": {"replicas": 1}},
            "controlPlane.podDisruptionBudget.minAvailable (2) is not less than controlPlane.replicas (1)",
        ),
        (  # as many as there are: the same, every drain waits forever
            {"controlPlane": {"replicas": 2}},
            "controlPlane.podDisruptionBudget.minAvailable (2) is not less than controlPlane.replicas (2)",
        ),
        (  # two Roles of one name in one namespace
            {"controlPlane": {"operator": {"namespaces": ["a", "a"]}}},
            "/controlPlane/operator/namespaces",
        ),
    ],
)
def test_conflicting_values_are_refused_by_name(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        render(values)


def _port_set(rule: dict[str, Any]) -> set[int] | None:
    """The TCP ports a rule admits; None when it names none (every port)."""
    if not rule.get("ports"):
        return None
    out: set[int] = set()
    for p in rule["ports"]:
        out |= set(range(int(p["port"]), int(p.get("endPort", p["port"])) + 1))
    return out


@pytest.mark.parametrize(
    "name", ["kuberay", "mtls-cert-manager", "hostpath-identity-host-network", "kuberay-and-existing-cluster"]
)
def test_executor_api_port_is_reachable_from_the_control_plane_only(name: str) -> None:
    """The policy's comment says the API (50061) is the control plane's only; the Ray-peer rule
    used to name no ports, which admitted the agents (where engines run) to the API too."""
    docs = render(COMBINATIONS[name])
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == f"{FULL}-executor"]
    ray_rules = 0
    for rule in policy["spec"]["ingress"]:
        ports = _port_set(rule)
        assert ports is not None, f"a rule admits every port: {rule}"
        components = {
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            for p in rule["from"]
        }
        if API_PORT in ports:
            assert components == {"controlplane"}, rule
        else:
            ray_rules += 1
            assert ports == set(range(1, 65536)) - {API_PORT}  # Ray picks the driver's ports
            assert {"ray-head", "agent"} <= components
    assert ray_rules == 1


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_service_names_are_dns_labels(name: str) -> None:
    """The API server refuses a Service whose name is not a DNS-1035 label (63 characters at
    most); kubernetes-validate's OpenAPI schemas do not check names, so this does."""
    for svc in by_kind(render(COMBINATIONS[name]), "Service"):
        assert DNS_1035.match(svc["metadata"]["name"]), svc["metadata"]["name"]
