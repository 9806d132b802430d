"""Microsoft's own Python clients against the keyroll emulator.

The session starts the emulator binary (``KEYROLL_EMULATOR_BIN``, default
``target/debug/keyroll-emulator``) with its registrations on the command line, reads its
``READY {json}`` line, and points the clients at it:

* TLS: ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE`` name the emulator's CA (requests, and so
  azure-core and MSAL, read them), and the Key Vault clients get ``connection_verify`` too.
* Names: ``*.vault.localhost`` does not resolve on every machine (it does not here), so
  ``socket.getaddrinfo`` is wrapped to answer 127.0.0.1 for names under ``.localhost``; TLS
  still checks the original host name against the emulator's certificate.
* Authority: ``https://localhost:{port}``, with instance discovery off (the clients would ask
  login.microsoftonline.com which authorities exist).
"""

import base64
import datetime
import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ROOT = pathlib.Path(__file__).resolve().parent.parent

SECRET_APP = "py-secret-app"
SECRET = "py-secret-value"
CERT_APP = "py-cert-app"
WORKLOAD_APP = "py-workload-app"
SERVICE_ACCOUNT = ("conformance", "py")
OTHER_TENANT = "fabrikam"
OTHER_APP = "fabrikam-app"
OTHER_SECRET = "fabrikam-secret"
USER_IDENTITY = "py-identity"
API = "api://conformance"
API_APP_ID = "5f0c3d1e-0000-4000-a000-00000000c0f0"
API_ROLE = "Conformance.Read"

_real_getaddrinfo = socket.getaddrinfo


def _localhost_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _localhost_getaddrinfo


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class ClientCertificate:
    """A self-signed RSA certificate and its key, as an app registration holds them."""

    def __init__(self, directory: pathlib.Path):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_APP)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.sha1_hex = hashlib.sha1(der).hexdigest()
        self.x5t = b64url(hashlib.sha1(der).digest())
        self.key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self.cert_path = directory / "client-cert.pem"
        self.cert_path.write_text(self.cert_pem)
        self.bundle_path = directory / "client-cert-and-key.pem"
        self.bundle_path.write_text(self.key_pem + self.cert_pem)

    def assertion(self, client_id: str, audience: str, lifetime: int = 600, now: float = None) -> str:
        """An RFC 7523 client assertion signed with the certificate's key."""
        now = time.time() if now is None else now
        header = {"alg": "RS256", "typ": "JWT", "x5t": self.x5t}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + lifetime,
        }
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


class Emulator:
    """The running emulator: its READY facts and the admin API."""

    def __init__(self, ready: dict, workdir: pathlib.Path, certificate: ClientCertificate):
        self.ready = ready
        self.workdir = workdir
        self.certificate = certificate
        self.ca = ready["ca_path"]
        self.tenant = ready["tenant_id"]
        self.authority = ready["authority_host"].rstrip("/")
        self.vault_resource = ready["vault_resource"]
        self.vault_scope = self.vault_resource + "/.default"
        self.token_file = str(workdir / "azure-identity-token")

    def vault_url(self, name: str) -> str:
        return self.ready["vault_url_template"].replace("{name}", name)

    def token_endpoint(self, tenant: str) -> str:
        return f"{self.authority}/{tenant}/oauth2/v2.0/token"

    def admin(self, method: str, path: str, body=None):
        r = requests.request(method, self.ready["admin_url"] + path, json=body, verify=self.ca, timeout=30)
        r.raise_for_status()
        return r.json()

    def client_kwargs(self) -> dict:
        """What every azure-identity credential needs to reach the emulator's Entra."""
        return {"authority": self.authority, "disable_instance_discovery": True, "connection_verify": self.ca}


@pytest.fixture(scope="session")
def emulator():
    binary = os.environ.get("KEYROLL_EMULATOR_BIN", str(ROOT / "target" / "debug" / "keyroll-emulator"))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="keyroll-conformance-"))
    certificate = ClientCertificate(workdir)
    token_file = workdir / "azure-identity-token"
    namespace, account = SERVICE_ACCOUNT
    process = subprocess.Popen(
        [
            binary,
            "--port", "0",
            "--client-secret", f"{SECRET_APP}={SECRET}",
            "--client-certificate", f"{CERT_APP}={certificate.cert_path}",
            "--federated-credential", f"{WORKLOAD_APP}=system:serviceaccount:{namespace}:{account}",
            "--service-account-token", f"{namespace}:{account}={token_file}",
            "--api", f"{API}=v2",
            "--grant", f"{API}={API_ROLE}={CERT_APP}",
            "--tenant", OTHER_TENANT,
            "--user-assigned-identity", USER_IDENTITY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("READY "), f"unexpected first line {line!r}"
    ready = json.loads(line[len("READY "):])
    emu = Emulator(ready, workdir, certificate)
    # The second tenant's app and the API's app id, through the admin API.
    emu.admin("POST", "entra/apps", {"client_id": OTHER_APP, "tenant": OTHER_TENANT, "secrets": [OTHER_SECRET]})
    emu.admin(
        "POST",
        "entra/apis",
        {
            "identifier_uris": [API],
            "app_id": API_APP_ID,
            "app_roles": [API_ROLE],
            "grants": {CERT_APP: [API_ROLE]},
            "accessTokenAcceptedVersion": 2,
        },
    )
    saved = {k: os.environ.get(k) for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    os.environ["REQUESTS_CA_BUNDLE"] = emu.ca
    os.environ["SSL_CERT_FILE"] = emu.ca
    try:
        yield emu
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        state_dir = pathlib.Path(emu.ca).parent
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not state_dir.exists(), "the emulator removes its temporary state directory on SIGTERM"
