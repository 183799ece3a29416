"""Tokenfab's certificates when cert-manager is not used: run by the chart's pre-install and
pre-upgrade Job with the Tokenfab image (``cryptography`` and the ``kubernetes`` client).

Input: the chart's certificate list (``tokenfab.certificates`` in _helpers.tpl, one entry per
component: secret, component, ca, commonName, uris, dns, ips, usages) as JSON in
``$CERTGEN_SPEC``. For each CA named there (``workload``: the gRPC identities; ``etcd``: etcd's
server, peer and client certificates) a CA key and certificate are kept in the Secret
``<release>-ca`` / ``<release>-etcd-ca``, which no pod mounts; every component gets its own key
and certificate in its own ``kubernetes.io/tls`` Secret (tls.crt, tls.key, ca.crt).

Idempotent: a Secret is left alone while its certificate matches its spec (a digest in an
annotation), chains to the current CA and has more than ``$CERTGEN_RENEW_DAYS`` left; otherwise
a new key and certificate replace it. A CA within its renewal window is replaced, and with it
every certificate it signed. Secrets of this release whose component no longer exists (a node
removed from the values) are deleted; their certificates stay valid until they expire, which is
why leaf certificates are short-lived compared to the CA (docs/design/kubernetes.md).

The logic (``new_ca``, ``issue``, ``needs_issue``, and ``reconcile`` against a
:class:`SecretStore`) does no I/O of its own and is tested in tests/helm/test_certgen.py;
``main`` only wires it to the Kubernetes API (:class:`KubeSecrets`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DIGEST_ANNOTATION = "tokenfab.io/spec-sha256"
COMPONENT_LABEL = "tokenfab.io/tls-component"
CA_LABEL = "tokenfab.io/ca"
USAGES = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}
CA_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str, *, now: dt.datetime, days: int = CA_DAYS) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(spec: dict[str, Any], ca: Pair, *, now: dt.datetime, days: int) -> Pair:
    """A key and a certificate for one component, signed by ``ca``; ``spec`` as in the chart."""
    unknown = set(spec["usages"]) - set(USAGES)
    if unknown:
        raise ValueError(f"{spec['secret']}: usages: unknown {sorted(unknown)}")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{spec['secret']}: the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec["uris"]]
    sans += [x509.DNSName(d) for d in spec["dns"]]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec["ips"]]
    if not sans:
        raise ValueError(f"{spec['secret']}: no subject alternative name")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([USAGES[u] for u in spec["usages"]]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def needs_issue(
    spec: dict[str, Any],
    data: dict[str, bytes] | None,
    annotations: dict[str, str],
    ca: Pair,
    *,
    now: dt.datetime,
    renew_days: int,
) -> str:
    """Why the Secret must be (re)issued, or "" when it is current."""
    if data is None:
        return "missing"
    if annotations.get(DIGEST_ANNOTATION) != spec_digest(spec):
        return "spec changed"
    if data.get("ca.crt") != ca.cert_pem or not data.get("tls.key"):
        return "another CA"
    try:
        cert = x509.load_pem_x509_certificate(data.get("tls.crt", b""))
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "unreadable or not signed by the CA"
    if cert.not_valid_after_utc - now < dt.timedelta(days=renew_days):
        return "expiring"
    return ""


class SecretStore(Protocol):
    """The Secrets of the release's namespace: ``get`` gives (data, annotations) or None."""

    def get(self, name: str) -> tuple[dict[str, bytes], dict[str, str]] | None: ...

    def put(
        self, name: str, data: dict[str, bytes], labels: dict[str, str], notes: dict[str, str]
    ) -> None: ...

    def names(self, selector: str) -> list[str]: ...

    def delete(self, name: str) -> None: ...


def reconcile(
    specs: list[dict[str, Any]],
    store: SecretStore,
    *,
    release: str,
    labels: dict[str, str],
    now: dt.datetime,
    days: int,
    renew_days: int,
) -> list[dict[str, str]]:
    """Bring the Secrets in line with ``specs``; returns what was done (one record per change)."""
    done: list[dict[str, str]] = []

    def put(name: str, pair: Pair, ca_pem: bytes, extra: dict[str, str], notes: dict[str, str]) -> None:
        data = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca_pem}
        store.put(name, data, {**labels, **extra}, notes)

    cas: dict[str, Pair] = {}
    for kind in sorted({s["ca"] for s in specs}):
        name = f"{release}-ca" if kind == "workload" else f"{release}-{kind}-ca"
        current = store.get(name)
        pair: Pair | None = None
        if current and current[0].get("tls.crt") and current[0].get("tls.key"):
            pair = Pair(current[0]["tls.crt"], current[0]["tls.key"])
            if pair.cert.not_valid_after_utc - now < dt.timedelta(days=days + renew_days):
                pair = None  # a CA must outlive every certificate it signs
        if pair is None:
            pair = new_ca(name, now=now)
            put(name, pair, pair.cert_pem, {CA_LABEL: kind}, {})
            done.append({"event": "certgen.ca_issued", "secret": name})
        cas[kind] = pair

    wanted = set()
    for spec in specs:
        wanted.add(spec["secret"])
        ca = cas[spec["ca"]]
        current = store.get(spec["secret"])
        data, notes = current if current is not None else (None, {})
        reason = needs_issue(spec, data, notes, ca, now=now, renew_days=renew_days)
        if reason:
            pair = issue(spec, ca, now=now, days=days)
            put(spec["secret"], pair, ca.cert_pem, {COMPONENT_LABEL: spec["component"]},
                {DIGEST_ANNOTATION: spec_digest(spec)})  # fmt: skip
            done.append({"event": "certgen.issued", "secret": spec["secret"], "reason": reason})
    instance = labels.get("app.kubernetes.io/instance", "")
    for name in store.names(f"app.kubernetes.io/instance={instance},{COMPONENT_LABEL}"):
        if name not in wanted:
            store.delete(name)
            done.append({"event": "certgen.deleted", "secret": name})
    return done


class KubeSecrets:  # pragma: no cover - the cluster side of the Job
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _api(self) -> Any:
        from kubernetes import client, config

        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.CoreV1Api()

    def get(self, name: str) -> tuple[dict[str, bytes], dict[str, str]] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self._api().read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return data, dict(secret.metadata.annotations or {})

    def put(self, name: str, data: dict[str, bytes], labels: dict[str, str], notes: dict[str, str]) -> None:
        from kubernetes import client

        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=notes),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        )
        if self.get(name) is None:
            self._api().create_namespaced_secret(self.namespace, body)
        else:
            self._api().replace_namespaced_secret(name, self.namespace, body)

    def names(self, selector: str) -> list[str]:
        items = self._api().list_namespaced_secret(self.namespace, label_selector=selector).items
        return [str(s.metadata.name) for s in items]

    def delete(self, name: str) -> None:
        self._api().delete_namespaced_secret(name, self.namespace)


def main() -> int:  # pragma: no cover - runs in the cluster (the chart's certgen Job)
    done = reconcile(
        json.loads(os.environ["CERTGEN_SPEC"]),
        KubeSecrets(os.environ["CERTGEN_NAMESPACE"]),
        release=os.environ["CERTGEN_RELEASE"],
        labels=json.loads(os.environ["CERTGEN_LABELS"]),
        now=dt.datetime.now(dt.UTC),
        days=int(os.environ.get("CERTGEN_DAYS", "365")),
        renew_days=int(os.environ.get("CERTGEN_RENEW_DAYS", "60")),
    )
    for record in done:
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
