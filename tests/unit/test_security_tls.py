"""Certificate files: what a load accepts, and when a poll reloads (no sockets here; the servers
and their handshakes are tests/integration/test_cert_rotation.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from controlplane.security import Kind, LocalCA
from tokenfab.tls import CertificateFiles, ServerTLS, TLSConfigError, TLSMetrics, load_material


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("ca"))


def sample(metric: Any, **labels: str) -> float:
    """A metric's value as a scrape reads it."""
    for family in metric.collect():
        for s in family.samples:
            if s.labels == labels and not s.name.endswith("_created"):
                return float(s.value)
    raise AssertionError(f"no sample of {metric!r} with labels {labels}")


def test_a_set_loads_only_whole_and_matching(ca: LocalCA, tmp_path: Path) -> None:
    a, b = ca.issue(Kind.CONTROLPLANE, "u-a"), ca.issue(Kind.CONTROLPLANE, "u-b")
    material = load_material(a.cert, a.key, ca.cert_file)
    assert material.ca == ca.cert_file.read_bytes() and material.not_after > 0
    with pytest.raises(TLSConfigError, match=r"tls_key: .* is not the key of the certificate"):
        load_material(a.cert, b.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigError, match=r"tls_cert: .* does not hold a certificate"):
        load_material(garbage, a.key)
    with pytest.raises(TLSConfigError, match=r"tls_key: .* does not hold an unencrypted private key"):
        load_material(a.cert, garbage)
    with pytest.raises(TLSConfigError, match=r"tls_client_ca: .* does not hold certificates"):
        load_material(a.cert, a.key, garbage)
    with pytest.raises(TLSConfigError, match="tls_cert: cannot read"):
        load_material(tmp_path / "missing.crt", a.key)
    with pytest.raises(TLSConfigError, match="tls_key"):  # a server refuses to start on a mismatch
        ServerTLS(a.cert, b.key).credentials("test", CollectorRegistry())


def test_a_poll_reloads_changed_contents_once_and_keeps_the_last_good_set(
    ca: LocalCA, tmp_path: Path
) -> None:
    a, b = ca.issue(Kind.EXECUTOR, "u-a"), ca.issue(Kind.EXECUTOR, "u-b")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copyfile(a.cert, cert)
    shutil.copyfile(a.key, key)
    metrics = TLSMetrics(CollectorRegistry())
    files = CertificateFiles(cert, key, component="test", metrics=metrics)
    first = files.current
    assert files.poll() is None  # nothing moved
    cert.write_bytes(a.cert.read_bytes())  # rewritten with the same contents: nothing to load
    assert files.poll() is None and files.current is first
    cert.write_bytes(b.cert.read_bytes())  # the certificate first: a mismatched pair for a moment
    with capture_logs() as logs:
        assert files.poll() is None
    assert [e["event"] for e in logs] == ["tls.reload_failed"] and "tls_key" in logs[0]["error"]
    assert files.current is first and sample(metrics.reloads, component="test", result="error") == 1
    key.write_bytes(b.key.read_bytes())  # then the key: the pair is whole
    renewed = files.poll()
    assert renewed is not None and files.current is renewed and renewed.serial != first.serial
    assert sample(metrics.reloads, component="test", result="ok") == 1
    assert sample(metrics.expiry, component="test") == renewed.not_after
    assert files.poll() is None  # and only once
