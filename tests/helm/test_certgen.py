"""The chart's certgen Job script (deploy/helm/tokenfab/files/certgen.py) on the certificate list
the real Helm engine renders: every component's certificate carries its identity and names,
chains to the right CA, and works for mutual TLS (a real TLS 1.3 handshake through Python's ssl
module, in memory); certificates from the other CA or for another name are refused; a current
Secret is kept and a stale one is reissued."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import ssl
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helm.test_chart import CHART, VALUE_SETS, by_kind, render

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokenfab_certgen", CHART / "files" / "certgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


certgen = _load()


def rendered_specs(values: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = by_kind(render(values), "Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    specs: list[dict[str, Any]] = json.loads(env["CERTGEN_SPEC"])
    return specs


SPECS = rendered_specs({**VALUE_SETS["kuberay"], "tls": {"source": "generate"}})


@pytest.fixture(scope="module")
def issued() -> dict[str, Any]:
    cas = {kind: certgen.new_ca(f"tf-{kind}-ca", now=NOW) for kind in ("workload", "etcd")}
    pairs = {s["secret"]: certgen.issue(s, cas[s["ca"]], now=NOW, days=365) for s in SPECS}
    return {"cas": cas, "pairs": pairs}


def test_every_component_has_its_identity(issued: dict[str, Any]) -> None:
    assert {s["component"] for s in SPECS} == {
        "controlplane",
        "executor",
        "agent",
        "gateway",
        "etcd",
        "etcd-client",
        "client",
    }
    for spec in SPECS:
        cert = issued["pairs"][spec["secret"]].cert
        cert.verify_directly_issued_by(issued["cas"][spec["ca"]].cert)
        other = "etcd" if spec["ca"] == "workload" else "workload"
        with pytest.raises((ValueError, InvalidSignature)):
            cert.verify_directly_issued_by(issued["cas"][other].cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == spec["uris"]
        assert san.get_values_for_type(x509.DNSName) == spec["dns"]
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        names = {
            ExtendedKeyUsageOID.SERVER_AUTH: "server auth",
            ExtendedKeyUsageOID.CLIENT_AUTH: "client auth",
        }
        assert {names[u] for u in eku} == set(spec["usages"])
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    uris = sorted(u for s in SPECS for u in s["uris"])
    assert uris == sorted([
        "spiffe://tokenfab/controlplane/tf-tokenfab", "spiffe://tokenfab/controlplane/tf-tokenfab",
        "spiffe://tokenfab/executor/bj-a", "spiffe://tokenfab/node/gpu-a-1", "spiffe://tokenfab/node/gpu-a-2",
        "spiffe://tokenfab/client/cli",
        "spiffe://tokenfab/gateway/tf-tokenfab", "spiffe://tokenfab/gateway/tf-tokenfab",  # HTTPS, etcd client
    ])  # fmt: skip
    assert len({s["secret"] for s in SPECS}) == len(SPECS)  # one Secret (one key) per component


def _files(tmp: Path, name: str, pair: Any, ca: Any) -> tuple[str, str, str]:
    paths = (tmp / f"{name}.crt", tmp / f"{name}.key", tmp / f"{name}-ca.crt")
    paths[0].write_bytes(pair.cert_pem)
    paths[1].write_bytes(pair.key_pem)
    paths[2].write_bytes(ca.cert_pem)
    return str(paths[0]), str(paths[1]), str(paths[2])


def handshake(server: tuple[str, str, str], client: tuple[str, str, str], hostname: str) -> dict[str, Any]:
    """A TLS handshake in memory; returns the client certificate as the server saw it."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server[0], server[1])
    sctx.load_verify_locations(server[2])
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_cert_chain(client[0], client[1])
    cctx.load_verify_locations(client[2])
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    cli = cctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(10):
        for side, obj in (("c", cli), ("s", srv)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    cli.write(b"x")  # TLS 1.3 checks the client certificate after the client's Finished
    s_in.write(c_out.read())
    assert srv.read(1) == b"x"
    peer: dict[str, Any] = srv.getpeercert()  # type: ignore[assignment]
    return peer


def test_mutual_tls_between_the_components(issued: dict[str, Any]) -> None:
    cas, pairs = issued["cas"], issued["pairs"]
    by_component = {(s["component"], s["commonName"]): s["secret"] for s in SPECS}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cp = _files(d, "cp", pairs[by_component[("controlplane", "tf-tokenfab")]], cas["workload"])
        node = _files(d, "node", pairs[by_component[("agent", "gpu-a-1")]], cas["workload"])
        executor = _files(
            d, "ex", pairs[by_component[("executor", "tf-tokenfab-executor-bj-a")]], cas["workload"]
        )
        etcd = _files(d, "etcd", pairs[by_component[("etcd", "tf-tokenfab-etcd")]], cas["etcd"])
        etcd_client = _files(
            d, "etcdc", pairs[by_component[("etcd-client", "tokenfab-controlplane")]], cas["etcd"]
        )
        # an agent reaches the control plane's Service and is seen as its node
        peer = handshake(cp, node, "tf-tokenfab")
        assert ("URI", "spiffe://tokenfab/node/gpu-a-1") in peer["subjectAltName"]
        # the control plane dials an executor with its own identity
        peer = handshake(executor, cp, "tf-tokenfab-executor-bj-a")
        assert ("URI", "spiffe://tokenfab/controlplane/tf-tokenfab") in peer["subjectAltName"]
        # an operator's tool through kubectl port-forward, naming the Service
        cli = _files(d, "cli", pairs[by_component[("client", "cli")]], cas["workload"])
        peer = handshake(cp, cli, "tf-tokenfab")
        assert ("URI", "spiffe://tokenfab/client/cli") in peer["subjectAltName"]
        # the control plane's etcd client to a member's advertised name
        handshake(etcd, etcd_client, "tf-tokenfab-etcd-1.tf-tokenfab-etcd-peer.tokenfab.svc")
        # the gateway: its own etcd client certificate and identity, and a serving certificate
        # for its Service's names (the client here presents the cli certificate only because the
        # in-memory handshake requires one; tenants authenticate with bearer tokens)
        gateway_etcd = _files(d, "gwe", pairs[by_component[("etcd-client", "tokenfab-gateway")]], cas["etcd"])
        peer = handshake(etcd, gateway_etcd, "tf-tokenfab-etcd")
        assert ("URI", "spiffe://tokenfab/gateway/tf-tokenfab") in peer["subjectAltName"]
        gateway = _files(d, "gw", pairs[by_component[("gateway", "tf-tokenfab-gateway")]], cas["workload"])
        handshake(gateway, cli, "tf-tokenfab-gateway.tokenfab.svc")
        with pytest.raises(ssl.SSLCertVerificationError):  # it cannot pass for the control plane
            handshake(gateway, cli, "tf-tokenfab")
        with pytest.raises(ssl.SSLError):  # nor is its serving key an etcd credential
            handshake(etcd, (gateway[0], gateway[1], etcd[2]), "tf-tokenfab-etcd")
        # a workload certificate is no etcd credential; an agent's key cannot serve the API
        with pytest.raises(ssl.SSLError):
            handshake(etcd, (node[0], node[1], etcd[2]), "tf-tokenfab-etcd")
        with pytest.raises(ssl.SSLError):
            handshake((node[0], node[1], cp[2]), cp, "tf-tokenfab")
        # the executor's certificate does not pass for the control plane's name
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(executor, cp, "tf-tokenfab")


def test_secrets_are_kept_while_current_and_reissued_when_stale(issued: dict[str, Any]) -> None:
    cas, pairs = issued["cas"], issued["pairs"]
    spec = next(s for s in SPECS if s["component"] == "agent")
    pair = pairs[spec["secret"]]
    data = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": cas["workload"].cert_pem}
    notes = {certgen.DIGEST_ANNOTATION: certgen.spec_digest(spec)}

    def reason(**change: Any) -> str:
        args: dict[str, Any] = {"spec": spec, "data": data, "annotations": notes, "ca": cas["workload"],
                                "now": NOW, "renew_days": 30, **change}  # fmt: skip
        result: str = certgen.needs_issue(**args)
        return result

    assert reason() == ""
    assert reason(data=None) == "missing"
    assert reason(spec={**spec, "uris": ["spiffe://tokenfab/node/other"]}) == "spec changed"
    assert reason(ca=cas["etcd"]) == "another CA"
    assert reason(now=NOW + dt.timedelta(days=340)) == "expiring"
    forged = certgen.issue(spec, certgen.new_ca("tf-workload-ca", now=NOW), now=NOW, days=365)
    assert reason(data={**data, "tls.crt": forged.cert_pem}) == "unreadable or not signed by the CA"


def test_bad_specs_are_refused_naming_the_secret() -> None:
    ca = certgen.new_ca("ca", now=NOW)
    spec = {"secret": "s1", "commonName": "x", "uris": [], "dns": [], "ips": [], "usages": ["client auth"]}
    with pytest.raises(ValueError, match="s1: no subject alternative name"):
        certgen.issue(spec, ca, now=NOW, days=1)
    with pytest.raises(ValueError, match="s1: usages"):
        certgen.issue(
            {**spec, "uris": ["spiffe://tokenfab/node/n"], "usages": ["code signing"]}, ca, now=NOW, days=1
        )


class MemorySecrets:
    """An in-memory stand-in for the namespace's Secrets (the Job's only side-effects)."""

    def __init__(self) -> None:
        self.secrets: dict[str, tuple[dict[str, bytes], dict[str, str], dict[str, str]]] = {}

    def get(self, name: str) -> tuple[dict[str, bytes], dict[str, str]] | None:
        found = self.secrets.get(name)
        return None if found is None else (found[0], found[2])

    def put(self, name: str, data: dict[str, bytes], labels: dict[str, str], notes: dict[str, str]) -> None:
        self.secrets[name] = (dict(data), dict(labels), dict(notes))

    def names(self, selector: str) -> list[str]:
        wanted = [term.split("=", 1) for term in selector.split(",")]
        return [
            name
            for name, (_, labels, _) in self.secrets.items()
            if all((labels.get(t[0]) == t[1]) if len(t) == 2 else t[0] in labels for t in wanted)
        ]

    def delete(self, name: str) -> None:
        del self.secrets[name]


def test_reconcile_issues_once_then_keeps_replaces_and_prunes() -> None:
    store = MemorySecrets()
    labels = {"app.kubernetes.io/name": "tokenfab", "app.kubernetes.io/instance": "tf"}

    def run(specs: list[dict[str, Any]], now: dt.datetime = NOW) -> list[dict[str, str]]:
        done: list[dict[str, str]] = certgen.reconcile(
            specs, store, release="tf-tokenfab", labels=labels, now=now, days=365, renew_days=60
        )
        return done

    first = run(SPECS)
    assert {d["secret"] for d in first if d["event"] == "certgen.ca_issued"} == {
        "tf-tokenfab-ca",
        "tf-tokenfab-etcd-ca",
    }
    assert {d["secret"] for d in first if d["event"] == "certgen.issued"} == {s["secret"] for s in SPECS}
    assert run(SPECS) == []  # nothing to do: an upgrade with the same values changes no key
    keys = {name: store.secrets[name][0]["tls.key"] for name in store.secrets}
    # a node leaves the values, another joins: only those two Secrets change
    fewer = [s for s in SPECS if s["uris"] != ["spiffe://tokenfab/node/gpu-a-2"]]
    joined = rendered_specs({**VALUE_SETS["kuberay"], "tls": {"source": "generate"},
                             "agents": {"nvidia": {"enabled": True, "nodes": ["gpu-a-1", "gpu-a-3"]}}})  # fmt: skip
    assert len(fewer) == len(SPECS) - 1
    changes = {(d["event"], d["secret"]) for d in run(joined)}
    assert changes == {
        ("certgen.issued", "tf-tokenfab-node-gpu-a-3-tls"),
        ("certgen.deleted", "tf-tokenfab-node-gpu-a-2-tls"),
    }
    assert store.secrets["tf-tokenfab-controlplane-tls"][0]["tls.key"] == keys["tf-tokenfab-controlplane-tls"]
    # near expiry, leaf certificates are renewed under the same CA
    later = NOW + dt.timedelta(days=320)
    renewed = {d["secret"] for d in run(joined, later)}
    assert renewed == {s["secret"] for s in joined}
    assert store.secrets["tf-tokenfab-ca"][0]["tls.key"] == keys["tf-tokenfab-ca"]
    # CA secrets are never pruned, and no pruning outside the release's own certificates
    store.put("other", {}, {"app.kubernetes.io/instance": "other", certgen.COMPONENT_LABEL: "agent"}, {})
    run(joined, later)
    assert {"tf-tokenfab-ca", "tf-tokenfab-etcd-ca", "other"} <= set(store.secrets)
