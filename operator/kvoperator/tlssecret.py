"""The TLS Secret generated when ``spec.tls.enabled`` names none: a private CA and one node certificate.

It has the layout cert-manager writes (``tls.crt``, ``tls.key``, ``ca.crt``)
so the pods mount either the same way. One certificate covers every pod
(a wildcard under the headless Service) and the client Service; it serves
HTTPS and is also the client certificate nodes present to each other, so
the CA alone decides who is a peer. The CA key is not kept: nothing but
this Secret is ever signed, and a user who wants rotation brings
cert-manager, whose renewals the nodes pick up without a restart.
"""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvoperator.resources import TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY, Body, ClusterRef, object_meta

VALIDITY = datetime.timedelta(days=3650)


def dns_names(ref: ClusterRef) -> list[str]:
    ns = ref.namespace
    return [
        f"*.{ref.headless_service}.{ns}.svc",
        f"*.{ref.headless_service}.{ns}.svc.cluster.local",
        f"{ref.client_service}.{ns}.svc",
        f"{ref.client_service}.{ns}.svc.cluster.local",
        f"{ref.client_service}.{ns}",
        ref.client_service,
    ]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_tls_material(ref: ClusterRef, now: datetime.datetime | None = None) -> dict[str, bytes]:
    """A fresh CA and a node certificate signed by it, as PEM keyed like cert-manager's Secret."""
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kvcluster {ref.namespace}/{ref.name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = dns_names(ref)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return {
        TLS_CERT_KEY: cert.public_bytes(serialization.Encoding.PEM),
        TLS_KEY_KEY: _pem_key(key),
        TLS_CA_KEY: ca.public_bytes(serialization.Encoding.PEM),
    }


def build_tls_secret(ref: ClusterRef, material: dict[str, bytes]) -> Body:
    """The Secret object; the material is passed in so the builder stays deterministic."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": object_meta(ref, ref.generated_tls_secret, "tls"),
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(material.items())},
    }
