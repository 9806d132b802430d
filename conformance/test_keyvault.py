"""A token from each kind of credential opens a vault, and each Key Vault client works:
keys (with a remote sign checked locally), certificates (through their pending operation) and
secrets."""

import hashlib
import uuid

import pytest
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.certificates import CertificateClient, CertificatePolicy
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from conftest import CERT_APP, SECRET, SECRET_APP, WORKLOAD_APP


def credentials(emulator, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.ready["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.ready["identity_header"])
    kwargs = emulator.client_kwargs()
    return {
        "client-secret": ClientSecretCredential(emulator.tenant, SECRET_APP, SECRET, **kwargs),
        "certificate": CertificateCredential(
            emulator.tenant, CERT_APP, certificate_path=str(emulator.certificate.bundle_path), **kwargs
        ),
        "managed-identity": ManagedIdentityCredential(),
        "workload-identity": WorkloadIdentityCredential(
            tenant_id=emulator.tenant, client_id=WORKLOAD_APP, token_file_path=emulator.token_file, **kwargs
        ),
    }


@pytest.mark.parametrize("kind", ["client-secret", "certificate", "managed-identity", "workload-identity"])
def test_secrets_with_each_credential(emulator, monkeypatch, kind):
    credential = credentials(emulator, monkeypatch)[kind]
    client = SecretClient(emulator.vault_url("pysecrets"), credential, connection_verify=emulator.ca)
    name = f"db-{kind}"
    set_ = client.set_secret(name, f"value for {kind}", content_type="text/plain")
    got = client.get_secret(name)
    assert (got.value, got.properties.content_type) == (f"value for {kind}", "text/plain")
    assert got.properties.version == set_.properties.version
    assert name in [s.name for s in client.list_properties_of_secrets()]


def test_keys_create_and_remote_sign(emulator, monkeypatch):
    credential = credentials(emulator, monkeypatch)["certificate"]
    keys = KeyClient(emulator.vault_url("pykeys"), credential, connection_verify=emulator.ca)
    key = keys.create_rsa_key("signing", size=2048)
    rotated = keys.rotate_key("signing")
    assert rotated.properties.version != key.properties.version
    versions = list(keys.list_properties_of_key_versions("signing"))
    assert len(versions) == 2
    crypto = CryptographyClient(rotated, credential, connection_verify=emulator.ca)
    message = b"conformance"
    digest = hashlib.sha256(message).digest()
    result = crypto.sign(SignatureAlgorithm.rs256, digest)
    assert result.key_id == rotated.id
    # Checked with the public key alone, by an independent library.
    public = rotated.key
    numbers = RSAPublicNumbers(int.from_bytes(public.e, "big"), int.from_bytes(public.n, "big"))
    numbers.public_key().verify(result.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    assert crypto.verify(SignatureAlgorithm.rs256, digest, result.signature).is_valid


def test_certificates_through_the_pending_operation(emulator, monkeypatch):
    credential = credentials(emulator, monkeypatch)["client-secret"]
    client = CertificateClient(emulator.vault_url("pycerts"), credential, connection_verify=emulator.ca)
    name = f"tls-{uuid.uuid4().hex[:8]}"
    poller = client.begin_create_certificate(name, CertificatePolicy.get_default())
    created = poller.result()
    assert created.name == name
    cert = client.get_certificate(name)
    parsed = x509.load_der_x509_certificate(bytes(cert.cer))
    assert parsed.subject.rfc4514_string() == "CN=DefaultPolicy"
    assert cert.properties.x509_thumbprint == parsed.fingerprint(hashes.SHA1())
    # Its secret holds the private key (PKCS#12), same name and version.
    secrets = SecretClient(emulator.vault_url("pycerts"), credential, connection_verify=emulator.ca)
    secret = secrets.get_secret(name)
    assert secret.properties.content_type == "application/x-pkcs12"
    assert secret.properties.version == cert.properties.version
