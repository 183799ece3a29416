"""The token gateway in the chart, on the manifests the real Helm engine renders (helm-python-sdk):

* Deployment, Service, HPA (autoscaling/v2, on the Deployment), PDB and NetworkPolicy agree on
  names, labels and ports; the control plane tells capacity requests the gateway Service's URL;
* values that could not work are refused by name (plaintext, a PDB no eviction can satisfy, an
  HPA whose minimum exceeds its maximum, unknown keys);
* the pod as rendered runs: the real ``tokenfab gateway`` started with the container's own
  arguments (mount paths moved to a temporary directory), its certificate and its etcd client
  certificate issued by the chart's certgen from the rendered spec, the tenants file from the
  rendered Secret, a real etcd with client-certificate auth. The kubelet's HTTPS probe (no
  certificate verification, no token) gets 200 from /healthz; a client that trusts the CA and
  dials the Service name verifies the gateway's certificate; a call without a token gets 401.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from controlplane.embedded.etcd import EtcdProcess, free_port
from tests.helm.test_certgen import certgen
from tests.helm.test_chart import TOKEN_DIGEST, VALUE_SETS, by_kind, render
from tests.helm.test_chart_security import FULL, container, pods
from tokenfab.tls import ServerTLS

GATEWAY = f"{FULL}-gateway"
LABELS = {"app.kubernetes.io/name": "tokenfab", "app.kubernetes.io/instance": "tf"}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def _args(c: dict[str, Any]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in c["args"][1:])


def test_deployment_service_hpa_pdb_agree() -> None:
    docs = render({})
    deployment = _one(docs, "Deployment", GATEWAY)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == {**LABELS, "app.kubernetes.io/component": "gateway"}
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    args = _args(c)
    assert c["args"][0] == "gateway"
    port = int(args["--listen"].rsplit(":", 1)[1])
    assert args["--listen"].startswith("0.0.0.0:") and "--tls-cert" in args and "--tls-key" in args
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["https"] == port

    # the tenants file: the control plane's tenants Secret, as a whole directory (reloads on change)
    tenants_dir = args["--tenants"].rsplit("/", 1)[0]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == tenants_dir]
    assert "subPath" not in mount and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == f"{FULL}-tenants"

    service = _one(docs, "Service", GATEWAY)
    assert service["spec"]["selector"] == pod_labels and service["spec"]["type"] == "ClusterIP"
    ((sp),) = service["spec"]["ports"]
    assert sp["port"] == port and sp["targetPort"] == "https"

    hpa = _one(docs, "HorizontalPodAutoscaler", GATEWAY)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]

    pdb = _one(docs, "PodDisruptionBudget", GATEWAY)
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels
    assert 0 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    # capacity requests' endpoint is this Service, and the gateway tells tenants the same URL
    url = f"https://{GATEWAY}.tokenfab.svc:{port}/v1"
    assert _args(container(docs, FULL))["--gateway-url"] == url
    assert args["--public-url"] == url

    # the NetworkPolicy admits the gateway port (from anywhere by default: every call has a token)
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == GATEWAY]
    assert policy["spec"]["podSelector"]["matchLabels"] == pod_labels
    assert policy["spec"]["ingress"] == [{"ports": [{"port": port, "protocol": "TCP"}]}]


def test_values_shape_the_gateway() -> None:
    client = {"namespaceSelector": {"matchLabels": {"team": "inference"}}}
    docs = render(
        {
            "gateway": {
                "hpa": {"enabled": False, "targetMemoryUtilizationPercentage": 80},
                "replicas": 3,
                "podDisruptionBudget": {"minAvailable": 2},
                "service": {"type": "LoadBalancer", "annotations": {"lb": "internal"}},
                "publicUrl": "https://llm.example.com/v1",
                "policy": "least_load",
            },
            "networkPolicy": {"gatewayFrom": [client]},
            "tls": {"source": "generate"},
        }
    )
    assert _one(docs, "Deployment", GATEWAY)["spec"]["replicas"] == 3
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    service = _one(docs, "Service", GATEWAY)
    assert service["spec"]["type"] == "LoadBalancer" and service["metadata"]["annotations"] == {
        "lb": "internal"
    }
    args = _args(container(docs, GATEWAY))
    assert args["--policy"] == "least_load" and args["--public-url"] == "https://llm.example.com/v1"
    assert _args(container(docs, FULL))["--gateway-url"] == "https://llm.example.com/v1"
    (job,) = by_kind(docs, "Job")
    spec = json.loads({e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "CERTGEN_SPEC"
    ])  # fmt: skip
    (gateway_cert,) = [s for s in spec if s["component"] == "gateway"]
    assert "llm.example.com" in gateway_cert["dns"] and f"{GATEWAY}.tokenfab.svc" in gateway_cert["dns"]
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == GATEWAY]
    assert policy["spec"]["ingress"][0]["from"] == [client]
    # an external etcd: the gateway's own client Secret when given, never a certificate of the chart's
    external = {"bundled": {"enabled": False}, "external": {"endpoints": ["db:2379"], "tlsSecret": "cp-etcd"}}
    for extra, secret in (({}, "cp-etcd"), ({"gatewayTlsSecret": "gw-etcd"}, "gw-etcd")):
        etcd_values = {**external, "external": {**external["external"], **extra}}  # type: ignore[dict-item]
        ext = render({"etcd": etcd_values})
        gw_pod = _one(ext, "Deployment", GATEWAY)["spec"]["template"]["spec"]
        (etcd_volume,) = [v for v in gw_pod["volumes"] if v["name"] == "etcd-tls"]
        assert etcd_volume["secret"]["secretName"] == secret
        assert _args(gw_pod["containers"][0])["--etcd"] == "db:2379"
    hpa = render({"gateway": {"hpa": {"targetMemoryUtilizationPercentage": 80}}})
    metrics = _one(hpa, "HorizontalPodAutoscaler", GATEWAY)["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics] == ["cpu", "memory"]
    # disabled: nothing of the gateway anywhere, and no endpoint for the control plane to announce
    off = render({"gateway": {"enabled": False}})
    assert not [d for d in off if "gateway" in d["metadata"]["name"]]
    assert "--gateway-url" not in _args(container(off, FULL))
    assert "gateway" not in {labels.get("app.kubernetes.io/component") for _, labels, _ in pods(off)}


def test_scale_to_zero_idle_time_reaches_the_control_plane() -> None:
    """Scale from zero through the gateway needs the idle time before a request scales to zero:
    ``controlPlane.autoscaler.zeroAfterSeconds`` becomes the control plane's flag, which the CLI
    takes into its config; zero or less is refused by the schema."""
    assert _args(container(render({}), FULL))["--autoscale-zero-after"] == "300"
    docs = render({"controlPlane": {"autoscaler": {"zeroAfterSeconds": 45}}})
    assert _args(container(docs, FULL))["--autoscale-zero-after"] == "45"
    with pytest.raises(Exception, match="zeroAfterSeconds"):
        render({"controlPlane": {"autoscaler": {"zeroAfterSeconds": 0}}})
    refused = subprocess.run(  # its own process: the CLI configures logging for the whole process
        [sys.executable, "-m", "controlplane.cli.main", "controlplane", "--autoscale-zero-after", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "autoscale_zero_after_s" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"enabled": False}}, "gateway.enabled needs tls.enabled"),
        (
            {"gateway": {"podDisruptionBudget": {"minAvailable": 2}}},
            "gateway.podDisruptionBudget.minAvailable",
        ),
        (
            {
                "gateway": {
                    "hpa": {"enabled": False},
                    "replicas": 1,
                    "podDisruptionBudget": {"minAvailable": 1},
                }
            },
            "gateway.podDisruptionBudget.minAvailable",
        ),
        ({"gateway": {"hpa": {"minReplicas": 5, "maxReplicas": 3}}}, "gateway.hpa.minReplicas"),
        ({"gateway": {"hpa": {"maxReplicas": 0}}}, "maxReplicas"),
        ({"gateway": {"service": {"type": "ExternalName"}}}, "type"),
        ({"gateway": {"policy": "round_robin"}}, "policy"),
        ({"gateway": {"publicUrl": "http://plain.example.com/v1"}}, "publicUrl"),
        ({"gateway": {"replica": 2}}, "replica"),
    ],
)
def test_values_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):  # helm_python raises its own error type
        render(values)


# --- the rendered pod, run for real ---------------------------------------------------------------


def _issue(values: dict[str, Any], tmp: Path) -> dict[str, Path]:
    """The certgen Job's work, in-process: one directory per Secret (tls.crt, tls.key, ca.crt)."""
    (job,) = by_kind(render(values), "Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    now = dt.datetime.now(dt.UTC)
    cas = {kind: certgen.new_ca(f"tf-{kind}-ca", now=now) for kind in ("workload", "etcd")}
    dirs: dict[str, Path] = {}
    for spec in json.loads(env["CERTGEN_SPEC"]):
        pair = certgen.issue(spec, cas[spec["ca"]], now=now, days=1)
        d = tmp / "secrets" / spec["secret"]
        d.mkdir(parents=True)
        (d / "tls.crt").write_bytes(pair.cert_pem)
        (d / "tls.key").write_bytes(pair.key_pem)
        (d / "ca.crt").write_bytes(cas[spec["ca"]].cert_pem)
        dirs[spec["secret"]] = d
    return dirs


def _probe(port: int, path: str, *, context: ssl.SSLContext, host: str = "127.0.0.1") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_rendered_gateway_pod_serves_tls_and_answers_its_probes(tmp_path: Path) -> None:
    values = {
        **VALUE_SETS["single-vendor-ascend"],
        "tls": {"source": "generate"},
    }
    docs = render(values)
    dirs = _issue(values, tmp_path)
    deployment = _one(docs, "Deployment", GATEWAY)
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # every mount, materialised where the kubelet would put it (the tenants Secret as a directory)
    mounts: dict[str, Path] = {}
    for m in c["volumeMounts"]:
        volume = volumes[m["name"]]
        if "secret" in volume:
            secret = volume["secret"]["secretName"]
            if secret == f"{FULL}-tenants":
                (rendered,) = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == secret]
                d = tmp_path / "secrets" / secret
                d.mkdir(parents=True)
                for key, text in rendered["stringData"].items():
                    (d / key).write_text(text)
                mounts[m["mountPath"]] = d
            else:
                mounts[m["mountPath"]] = dirs[secret]  # only Secrets the chart issues
        else:
            mounts[m["mountPath"]] = tmp_path / m["name"]
            mounts[m["mountPath"]].mkdir()

    etcd_server = dirs[f"{FULL}-etcd-tls"]
    etcd = EtcdProcess(
        tmp_path / "etcd-data",
        log_file=tmp_path / "etcd.log",
        tls=ServerTLS(etcd_server / "tls.crt", etcd_server / "tls.key", etcd_server / "ca.crt"),
    )
    asyncio.run(etcd.start())
    port, metrics = free_port(), free_port()
    argv = []
    for arg in c["args"]:
        flag, _, value = arg.partition("=")
        for mount, local in mounts.items():
            if value.startswith(f"{mount}/"):
                arg = f"{flag}={local}{value.removeprefix(mount)}"
        if arg.startswith("--etcd="):
            arg = f"--etcd={etcd.endpoint}"  # the etcd Service, here on loopback (its cert names 127.0.0.1)
        elif arg.startswith("--listen="):
            arg = f"--listen=0.0.0.0:{port}"  # beyond loopback, as in the pod: TLS is what allows it
        elif arg.startswith("--metrics-address="):
            arg = f"--metrics-address=127.0.0.1:{metrics}"
        argv.append(arg)
    assert not [a for a in argv if "/etc/tokenfab" in a], argv
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("tokenfab")), *argv], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENFAB_ETCD": ""},
    )  # fmt: skip
    try:
        kubelet = ssl.create_default_context()  # an HTTPS probe: the kubelet verifies nothing
        kubelet.check_hostname = False
        kubelet.verify_mode = ssl.CERT_NONE
        status = None
        for _ in range(240):  # the readiness probe's retries, not a timing assertion
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
            try:
                status, body = _probe(port, "/healthz", context=kubelet)
                break
            except OSError:
                time.sleep(0.25)
        assert status == 200, (tmp_path / "gateway.log").read_text()[-2000:]
        assert json.loads(body) == {"ok": True}
        # a tenant's client that trusts the workload CA and dials the Service's name
        trusting = ssl.create_default_context(cafile=str(dirs[f"{GATEWAY}-tls"] / "ca.crt"))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            trusting.wrap_socket(raw, server_hostname=f"{GATEWAY}.tokenfab.svc") as tls,
        ):
            names = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "URI"]  # type: ignore[index]
            assert names == [f"spiffe://tokenfab/gateway/{FULL}"]
        with (
            pytest.raises(ssl.SSLCertVerificationError),  # not a name of the gateway
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            trusting.wrap_socket(raw, server_hostname=f"{FULL}.tokenfab.svc"),
        ):
            pass
        status, _ = _probe(port, "/v1/models", context=kubelet)
        assert status == 401  # the tenants file the chart rendered is what authenticates
        assert (
            yaml.safe_load((mounts["/etc/tokenfab/tenants"] / "tenants.yaml").read_text())["tenants"][0][
                "token_sha256"
            ]
            == TOKEN_DIGEST
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        etcd.stop()


def test_lint_knows_the_gateway_values() -> None:
    report = helm_python.lint(str(Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tokenfab"),
                              values={"gateway": {"hpa": {"enabled": False}, "replicas": 2}}, strict=False)  # fmt: skip
    assert not [m for m in report["messages"] if m["severity"] >= 3] + list(report["errors"])
