"""The chart's trust boundary and real-engine path, on the manifests the real Helm engine renders
(helm-python-sdk) for every value set of test_chart.py:

* every component has its own certificate and key, with its workload identity (URI SAN), and no
  pod mounts another component's key or a CA's key (agents never see a server key);
* the bundled etcd speaks TLS with client-certificate auth, from a CA of its own;
* the Ray head, the agents' raylets and the executors' drivers admit only each other;
* tokens are mounted so that a changed Secret reaches the files (no subPath);
* an agent that hosts its node's raylet advertises the pod's (or the node's) IP from the downward
  API, is sized for engines and, on NVIDIA, gets CUDA (compute) besides NVML (utility);
* every flag the chart passes exists in Tokenfab's CLI.
"""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import typer.main

from controlplane.cli.main import app
from tests.helm.test_chart import CHART, VALUE_SETS, by_kind, render

FULL = "tf-tokenfab"
RAY_PORTS = {6379, 8265, 10001}  # GCS, dashboard, Ray Client
TLS_SETS = [n for n in VALUE_SETS if not n.startswith("plaintext")]
RAY_SETS = ["kuberay", "mtls-cert-manager", "cert-manager-own-issuer-kuberay", "single-vendor-ascend",
            "hostpath-identity-host-network"]  # fmt: skip
SERVERS = ("controlplane", "executor", "agent", "gateway")  # the Tokenfab commands the chart runs


def certificates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """secret -> {component, subject, uris, dns, usages, ca} from cert-manager or the certgen Job."""
    found: dict[str, dict[str, Any]] = {}
    for cert in by_kind(docs, "Certificate"):
        spec = cert["spec"]
        if spec.get("isCA"):
            continue
        issuer = spec["issuerRef"]["name"]
        found[spec["secretName"]] = {
            "component": cert["metadata"]["labels"]["tokenfab.io/tls-component"],
            "uris": spec.get("uris", []),
            "dns": spec.get("dnsNames", []),
            "usages": spec["usages"],
            "ca": "etcd" if issuer == f"{FULL}-etcd-ca" else "workload",
        }
    for job in by_kind(docs, "Job"):
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        for spec in json.loads(env["CERTGEN_SPEC"]):
            found[spec["secret"]] = {k: spec[k] for k in ("component", "uris", "dns", "usages", "ca")}
    return found


def ca_secrets(docs: list[dict[str, Any]]) -> set[str]:
    cas = {c["spec"]["secretName"] for c in by_kind(docs, "Certificate") if c["spec"].get("isCA")}
    if by_kind(docs, "Job"):
        cas |= {f"{FULL}-ca", f"{FULL}-etcd-ca"}
    return cas


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(name, pod labels, pod spec) of every workload, the KubeRay head included."""
    out = []
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for d in by_kind(docs, kind):
            template = d["spec"]["template"]
            out.append((d["metadata"]["name"], template["metadata"]["labels"], template["spec"]))
    for ray in by_kind(docs, "RayCluster"):
        head = ray["spec"]["headGroupSpec"]["template"]
        out.append((ray["metadata"]["name"], head["metadata"]["labels"], head["spec"]))
    return out


def secret_volumes(pod: dict[str, Any]) -> set[str]:
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for v in pod.get("volumes", []):
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (d,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name]
    c: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
    return c


def agents(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(docs, "DaemonSet")


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return set(selector.get("matchLabels", {}).items()) <= set(labels.items()) and not selector.get(
        "matchExpressions"
    )


def quantity(q: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    text = str(q)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


@pytest.mark.parametrize("name", TLS_SETS)
def test_no_pod_mounts_another_components_key(name: str) -> None:
    docs = render(VALUE_SETS[name])
    certs = certificates(docs)
    cas = ca_secrets(docs)
    assert certs and cas
    mounted: dict[str, set[str]] = {}
    for pod_name, labels, pod in pods(docs):
        component = labels.get("app.kubernetes.io/component")
        for secret in secret_volumes(pod):
            assert secret not in cas, f"{name}: {pod_name} mounts the CA key {secret}"
            if secret not in certs:
                continue  # tenants, operators, an external etcd client Secret
            owner = certs[secret]
            assert owner["component"] != "client", f"{pod_name} mounts a person's client key {secret}"
            mounted.setdefault(secret, set()).add(str(component))
            if component == "controlplane":
                ok = owner["component"] in ("controlplane", "etcd-client") and owner["uris"] == [
                    f"spiffe://tokenfab/controlplane/{FULL}"
                ]
            elif component == "gateway":  # its serving certificate and its own etcd client one
                ok = owner["component"] in ("gateway", "etcd-client") and owner["uris"] == [
                    f"spiffe://tokenfab/gateway/{FULL}"
                ]
                assert owner["component"] == "etcd-client" or owner["usages"] == ["server auth"]
            elif component == "executor":
                cluster = labels["tokenfab.io/cluster"]
                ok = owner["uris"] == [f"spiffe://tokenfab/executor/{cluster}"]
            elif component == "agent":
                ok = owner["uris"] == [f"spiffe://tokenfab/node/{labels.get('tokenfab.io/node')}"]
                assert "server auth" not in owner["usages"], f"{pod_name} gets a server key"
            elif component == "etcd":
                ok = owner["component"] == "etcd"
            else:
                ok = False
            assert ok, f"{name}: {pod_name} ({component}) mounts {secret} of {owner['component']}"
    # one key per component: no Secret is mounted by two components
    assert mounted and all(len(users) == 1 for users in mounted.values()), mounted
    by_component: dict[str, set[str]] = {}
    for secret, owner in certs.items():
        by_component.setdefault(owner["component"], set()).add(secret)
    assert len(by_component["controlplane"]) == 1
    assert len(by_component["gateway"]) == 1
    components = {labels.get("app.kubernetes.io/component") for _, labels, _ in pods(docs)}
    assert "gateway" in components, f"{name}: no gateway pod"
    for pod_name, labels, pod in pods(docs):
        if labels.get("app.kubernetes.io/component") in ("controlplane", "executor", "gateway"):
            assert secret_volumes(pod) & set(certs), f"{pod_name} has no certificate of its own"
            for c in pod["containers"]:  # a TLS port cannot answer the kubelet's plaintext gRPC probe
                assert "grpc" not in c.get("readinessProbe", {}) and "grpc" not in c.get("livenessProbe", {})


@pytest.mark.parametrize(
    "name", ["default", "mtls-cert-manager", "kuberay", "cert-manager-own-issuer-kuberay"]
)
def test_identities_and_names_in_certificates(name: str) -> None:
    docs = render(VALUE_SETS[name])
    certs = certificates(docs)
    (cp,) = [c for c in certs.values() if c["component"] == "controlplane"]
    assert cp["uris"] == [f"spiffe://tokenfab/controlplane/{FULL}"]
    assert {FULL, f"{FULL}.tokenfab.svc"} <= set(cp["dns"])  # the Service agents and tools dial
    assert set(cp["usages"]) == {"server auth", "client auth"}  # also the executors' client
    args = container(docs, FULL)["args"]
    for target in [a.split("=", 2)[2] for a in args if a.startswith("--executor=")]:
        host = target.rsplit(":", 1)[0]
        (ex,) = [c for c in certs.values() if c["component"] == "executor" and host in c["dns"]]
        cluster = host.removeprefix(f"{FULL}-executor-")
        assert ex["uris"] == [f"spiffe://tokenfab/executor/{cluster}"]
    for ds in agents(docs):
        node = ds["spec"]["template"]["metadata"]["labels"]["tokenfab.io/node"]
        terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        address = next(a for a in ds["spec"]["template"]["spec"]["containers"][0]["args"] if "--address" in a)
        assert address.split("=")[1].rsplit(":", 1)[0] in cp["dns"]
    nodes = sorted(u for c in certs.values() if c["component"] == "agent" for u in c["uris"])
    listed = sorted(
        f"spiffe://tokenfab/node/{n}"
        for v in VALUE_SETS[name].get("agents", {}).values()
        if isinstance(v, dict)
        for n in v.get("nodes", [])
    )
    assert nodes == listed and len(agents(docs)) == len(listed)
    if name == "cert-manager-own-issuer-kuberay":
        issuers = {
            c["spec"]["issuerRef"]["name"] for c in by_kind(docs, "Certificate") if not c["spec"].get("isCA")
        }
        assert issuers == {"corp-ca", f"{FULL}-etcd-ca"}  # the operator's CA, and etcd's own


def test_engines_never_run_privileged_unless_allowed() -> None:
    chart = helm_python.Chart.load(str(CHART))
    values = {
        "agents": {"ascend": {"enabled": True, "nodes": ["npu-1"]}},
        "ray": {"clusters": [{"name": "default", "address": "ray-head.ray.svc:6379"}]},
    }
    with pytest.raises(
        helm_python.HelmError, match=r"agents\.ascend\.devicePlugin\.count: with a Ray cluster"
    ):
        chart.render(values=values, name="tf", namespace="tokenfab")
    for name in RAY_SETS:  # every Ray value set: privileged agents only where explicitly allowed
        allowed = VALUE_SETS[name].get("agents", {}).get("ray", {}).get("allowPrivileged", False)
        for ds in agents(render(VALUE_SETS[name])):
            privileged = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"].get("privileged")
            assert not privileged or allowed, ds["metadata"]["name"]


def test_agents_need_a_node_list_or_a_host_provisioned_identity() -> None:
    chart = helm_python.Chart.load(str(CHART))
    with pytest.raises(helm_python.HelmError, match=r"agents\.nvidia\.nodes: list the node names"):
        chart.render(values={"agents": {"nvidia": {"enabled": True}}}, name="tf", namespace="tokenfab")
    docs = render(VALUE_SETS["hostpath-identity-host-network"])
    for ds in agents(docs):
        pod = ds["spec"]["template"]["spec"]
        (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert tls == {"name": "tls", "hostPath": {"path": "/etc/tokenfab/node-tls", "type": "Directory"}}
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tls")
        assert mount["readOnly"] is True


@pytest.mark.parametrize("name", ["default", "mtls-cert-manager"])
def test_etcd_speaks_tls_with_client_certificate_auth(name: str) -> None:
    docs = render(VALUE_SETS[name])
    etcd = container(docs, f"{FULL}-etcd")
    args = dict(a.split("=", 1) for a in etcd["args"])
    for flag in ("--client-cert-auth", "--peer-client-cert-auth"):
        assert args[flag] == "true"
    for flag in ("--cert-file", "--key-file", "--trusted-ca-file", "--peer-cert-file", "--peer-key-file",
                 "--peer-trusted-ca-file"):  # fmt: skip
        assert args[flag].startswith("/etc/etcd/tls/"), flag
    for flag in ("--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls",
                 "--initial-advertise-peer-urls"):  # fmt: skip
        assert args[flag].startswith("https://"), flag
    assert "http://" not in args["--initial-cluster"]
    assert args["--listen-metrics-urls"] == "http://0.0.0.0:2381"  # probes only; /readyz, /livez
    assert etcd["readinessProbe"]["httpGet"]["port"] == 2381
    certs = certificates(docs)
    ((server, owner),) = [(s, c) for s, c in certs.items() if c["component"] == "etcd"]
    assert owner["ca"] == "etcd" and f"{FULL}-etcd" in owner["dns"]
    assert f"*.{FULL}-etcd-peer.tokenfab.svc" in owner["dns"]  # members' advertised names
    # two etcd clients, each with its own key: the control plane's and the gateway's
    assert [c["ca"] for c in certs.values() if c["component"] == "etcd-client"] == ["etcd", "etcd"]
    assert all(c["ca"] == "workload" for c in certs.values() if c["component"] not in ("etcd", "etcd-client"))
    cp = container(docs, FULL)
    assert {"--etcd-ca=/etc/tokenfab/etcd-tls/ca.crt", "--etcd-cert=/etc/tokenfab/etcd-tls/tls.crt",
            "--etcd-key=/etc/tokenfab/etcd-tls/tls.key"} <= set(cp["args"])  # fmt: skip
    assert f"{FULL}-etcd-client-tls" in secret_volumes(next(p for n, _, p in pods(docs) if n == FULL))
    gateway = container(docs, f"{FULL}-gateway")
    assert {"--etcd-ca=/etc/tokenfab/etcd-tls/ca.crt", "--etcd-cert=/etc/tokenfab/etcd-tls/tls.crt",
            "--etcd-key=/etc/tokenfab/etcd-tls/tls.key"} <= set(gateway["args"])  # fmt: skip
    gateway_pod = next(p for n, _, p in pods(docs) if n == f"{FULL}-gateway")
    assert secret_volumes(gateway_pod) == {f"{FULL}-etcd-gateway-client-tls", f"{FULL}-gateway-tls",
                                           f"{FULL}-tenants"}  # fmt: skip
    # etcd admits its clients (the control plane and the gateway) and its peers, nobody else
    (policy,) = _policies_for(docs, {"app.kubernetes.io/name": "tokenfab", "app.kubernetes.io/instance": "tf",
                                     "app.kubernetes.io/component": "etcd"})  # fmt: skip
    client_rules = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 2379, "protocol": "TCP"}]]
    assert [{_component_of(p) for p in r["from"]} for r in client_rules] == [{"controlplane", "gateway"}]
    assert server in secret_volumes(next(p for n, _, p in pods(docs) if n == f"{FULL}-etcd"))


def _policies_for(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in by_kind(docs, "NetworkPolicy") if matches(p["spec"]["podSelector"], labels)]


def _component_of(peer: dict[str, Any]) -> str:
    assert set(peer) == {"podSelector"} or set(peer) == {"ipBlock"}, peer
    if "ipBlock" in peer:
        return "ipBlock:" + peer["ipBlock"]["cidr"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "tf", selector
    return str(selector.get("app.kubernetes.io/component", "any"))


@pytest.mark.parametrize(
    "name", ["kuberay", "cert-manager-own-issuer-kuberay", "hostpath-identity-host-network"]
)
def test_ray_head_admits_only_executor_and_agents_on_ray_ports(name: str) -> None:
    docs = render(VALUE_SETS[name])
    ((_, labels, head),) = [(n, labels, p) for n, labels, p in pods(docs) if n.endswith("-ray")]
    policies = _policies_for(docs, labels)
    assert len(policies) == 1, "the Ray head is covered by exactly one NetworkPolicy"
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from") and rule.get("ports"), rule  # no rule admits everyone or every port
        ports = {p["port"] for p in rule["ports"]}
        if ports & (RAY_PORTS | {6380, 6381}):
            peers = {_component_of(p) for p in rule["from"]}
            allowed = {"executor", "agent"}
            if VALUE_SETS[name].get("agents", {}).get("ray", {}).get("hostNetwork"):
                allowed |= {f"ipBlock:{c}" for c in VALUE_SETS[name]["networkPolicy"]["nodeCIDRs"]}
            assert peers <= allowed, peers
            assert {"executor", "agent"} <= peers
            admitted |= ports
        else:
            assert ports == {8080}  # metrics, from networkPolicy.metricsFrom only
    assert admitted >= RAY_PORTS
    # the head's raylet listens on the fixed ports the policy names
    ray = by_kind(docs, "RayCluster")[0]["spec"]["headGroupSpec"]["rayStartParams"]
    assert {int(ray["port"]), int(ray["node-manager-port"]), int(ray["object-manager-port"])} <= admitted
    assert {p["containerPort"] for p in head["containers"][0]["ports"]} >= RAY_PORTS


@pytest.mark.parametrize("name", RAY_SETS)
def test_raylets_and_drivers_admit_only_ray_peers(name: str) -> None:
    docs = render(VALUE_SETS[name])
    rayfrom = {
        f"ipBlock:{p['ipBlock']['cidr']}"
        for p in VALUE_SETS[name].get("networkPolicy", {}).get("rayFrom", [])
    }
    for ds in agents(docs):
        (policy,) = _policies_for(docs, ds["spec"]["template"]["metadata"]["labels"])
        for rule in policy["spec"]["ingress"]:
            peers = {_component_of(p) for p in rule["from"]}
            if peers == {"gateway"}:  # the gateway to the replicas' engines: unprivileged ports only
                assert rule["ports"] == [{"port": 1024, "endPort": 65535, "protocol": "TCP"}]
                continue
            assert peers <= {"ray-head", "executor", "agent"} | rayfrom
    for _, labels, _ in [p for p in pods(docs) if p[1].get("app.kubernetes.io/component") == "executor"]:
        (policy,) = _policies_for(docs, labels)
        for rule in policy["spec"]["ingress"]:
            peers = {_component_of(p) for p in rule["from"]}
            if rule.get("ports") == [{"port": 50061, "protocol": "TCP"}]:
                assert peers == {"controlplane"}
            else:
                nodes = {
                    f"ipBlock:{c}" for c in VALUE_SETS[name].get("networkPolicy", {}).get("nodeCIDRs", [])
                }
                assert peers <= {"ray-head", "agent"} | rayfrom | nodes, peers
    # without Ray, agents accept nothing at all
    (policy,) = _policies_for(render(VALUE_SETS["default"]), {"app.kubernetes.io/name": "tokenfab",
                                                             "app.kubernetes.io/instance": "tf",
                                                             "app.kubernetes.io/component": "agent"})  # fmt: skip
    assert policy["spec"]["ingress"] == []


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_tokens_are_reloadable_mounts(name: str) -> None:
    docs = render(VALUE_SETS[name])
    cp = container(docs, FULL)
    files = {
        a.split("=", 1)[0]: a.split("=", 1)[1]
        for a in cp["args"]
        if a.startswith(("--tenants", "--operators"))
    }
    assert set(files) == {"--tenants", "--operators-file"}
    mounts = {m["mountPath"]: m for m in cp["volumeMounts"]}
    for path in files.values():
        directory, _ = path.rsplit("/", 1)
        assert directory in mounts and "subPath" not in mounts[directory], path
    for _, _, pod in pods(docs):  # subPath mounts never update: none anywhere
        for c in pod["containers"]:
            assert not [m for m in c.get("volumeMounts", []) if "subPath" in m or "subPathExpr" in m]
    (deployment,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == FULL]
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in annotations if "tenants" in k or "operators" in k]  # no restart on a change


@pytest.mark.parametrize("name", RAY_SETS)
def test_real_engine_path_is_coherent(name: str) -> None:
    values = VALUE_SETS[name]
    host_network = bool(values.get("agents", {}).get("ray", {}).get("hostNetwork"))
    docs = render(values)
    assert agents(docs)
    for ds in agents(docs):
        pod = ds["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert "TOKENFAB_RAY_ADDRESS" in env
        # the raylet's address for the head and the other raylets, never 127.0.0.1
        ip = env["TOKENFAB_RAY_NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert ip == ("status.hostIP" if host_network else "status.podIP")
        assert pod.get("hostNetwork", False) is host_network
        # sized for engines: CPU and memory, a memory-backed /dev/shm, a large /tmp, model cache
        requests = c["resources"]["requests"]
        assert quantity(requests["cpu"]) >= 4 and quantity(requests["memory"]) >= 32 * 2**30
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and quantity(shm["sizeLimit"]) >= 8 * 2**30
        assert quantity(volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]) >= 10 * 2**30
        assert mounts[env["HF_HOME"]["value"]] == "models"
        vendor = ds["metadata"]["labels"]["tokenfab.io/vendor"]
        plugin = values["agents"][vendor].get("devicePlugin", {}).get("count", 0)
        if vendor == "nvidia":
            assert set(env["NVIDIA_DRIVER_CAPABILITIES"]["value"].split(",")) >= {"compute", "utility"}
            assert ("NVIDIA_VISIBLE_DEVICES" in env) is (plugin == 0)
        if plugin:
            resource = (
                values["agents"][vendor].get("devicePlugin", {}).get("resource")
                or {
                    "nvidia": "nvidia.com/gpu",
                    "ascend": "huawei.com/Ascend910",
                    "metax": "metax-tech.com/gpu",
                    "biren": "birentech.com/gpu",
                }[vendor]
            )
            assert c["resources"]["limits"][resource] == plugin
            assert "privileged" not in c["securityContext"]  # devices from the plugin: no privilege
    # monitoring-only agents stay small and get NVML only
    mon = agents(render({"agents": {"nvidia": {"enabled": True, "nodes": ["n1"]}}}))[0]["spec"]["template"][
        "spec"
    ]
    env = {e["name"]: e.get("value") for e in mon["containers"][0]["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility" and "TOKENFAB_RAY_NODE_IP" not in env
    assert quantity(mon["containers"][0]["resources"]["limits"]["memory"]) <= 2**30


def test_the_agent_cli_reads_the_node_ip_the_chart_sets() -> None:
    from agents.raylet import RayletSpec

    command = typer.main.get_command(app)
    agent = command.commands["agent"]  # type: ignore[attr-defined]
    (param,) = [p for p in agent.params if "--ray-node-ip" in p.opts]
    assert param.envvar == "TOKENFAB_RAY_NODE_IP"
    spec = RayletSpec(address="h:6379", node_id="n", cluster="c", vendor="nvidia", accelerator="H100",
                      devices=8, temp_dir=__import__("pathlib").Path("/tmp/x"), node_ip="10.1.2.3")  # fmt: skip
    argv = spec.argv()
    assert argv[argv.index("--node-ip-address") + 1] == "10.1.2.3"


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_flag_the_chart_passes_exists(name: str) -> None:
    command = typer.main.get_command(app)
    docs = render(VALUE_SETS[name])
    checked = 0
    for _, _, pod in pods(docs):
        for c in pod["containers"]:
            args = c.get("args", [])
            if not args or args[0] not in SERVERS:
                continue
            known = {o for p in command.commands[args[0]].params for o in p.opts}  # type: ignore[attr-defined]
            flags = {a.split("=", 1)[0] for a in args[1:]}
            assert flags <= known, f"{name}: tokenfab {args[0]} has no {sorted(flags - known)}"
            checked += 1
    assert checked >= 1
