"""Every azure-identity credential type gets a token from the emulator, and MSAL reuses one
client assertion for two scopes, as Entra allows."""

import msal
import pytest
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from conftest import (
    API,
    API_APP_ID,
    API_ROLE,
    CERT_APP,
    SECRET,
    SECRET_APP,
    USER_IDENTITY,
    WORKLOAD_APP,
    jwt_claims,
)


def test_client_secret_credential_gets_a_v1_token_for_key_vault(emulator):
    credential = ClientSecretCredential(emulator.tenant, SECRET_APP, SECRET, **emulator.client_kwargs())
    token = credential.get_token(emulator.vault_scope)
    claims = jwt_claims(token.token)
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant}/"
    assert claims["aud"] == emulator.vault_resource
    assert (claims["appid"], claims["appidacr"], claims["ver"]) == (SECRET_APP, "1", "1.0")
    assert "azp" not in claims
    assert token.expires_on > 0


def test_certificate_credential_gets_a_v2_token_with_its_roles(emulator):
    credential = CertificateCredential(
        emulator.tenant, CERT_APP, certificate_path=str(emulator.certificate.bundle_path), **emulator.client_kwargs()
    )
    claims = jwt_claims(credential.get_token(f"{API}/.default").token)
    assert claims["iss"] == f"{emulator.authority}/{emulator.tenant}/v2.0"
    assert claims["aud"] == API_APP_ID
    assert (claims["azp"], claims["azpacr"], claims["ver"]) == (CERT_APP, "2", "2.0")
    assert claims["roles"] == [API_ROLE]
    # The same credential, for Key Vault: a v1 token.
    vault = jwt_claims(credential.get_token(emulator.vault_scope).token)
    assert (vault["appid"], vault["appidacr"]) == (CERT_APP, "2")


def test_client_assertion_credential_with_one_assertion_for_two_scopes(emulator):
    # The same signed assertion is presented for both scopes: Entra accepts it until it expires.
    assertion = emulator.certificate.assertion(CERT_APP, emulator.token_endpoint(emulator.tenant))
    calls = []

    def make_assertion():
        calls.append(1)
        return assertion

    credential = ClientAssertionCredential(emulator.tenant, CERT_APP, make_assertion, **emulator.client_kwargs())
    assert jwt_claims(credential.get_token(emulator.vault_scope).token)["appid"] == CERT_APP
    assert jwt_claims(credential.get_token(f"{API}/.default").token)["azp"] == CERT_APP
    assert len(calls) == 2


def test_msal_reuses_its_certificate_assertion_across_two_scopes(emulator):
    app = msal.ConfidentialClientApplication(
        CERT_APP,
        authority=f"{emulator.authority}/{emulator.tenant}",
        client_credential={
            "private_key": emulator.certificate.key_pem,
            "thumbprint": emulator.certificate.sha1_hex,
        },
        instance_discovery=False,
    )
    first = app.acquire_token_for_client(scopes=[emulator.vault_scope])
    assert "access_token" in first, first
    second = app.acquire_token_for_client(scopes=[f"{API}/.default"])
    assert "access_token" in second, second
    assert jwt_claims(second["access_token"])["aud"] == API_APP_ID


def test_msal_with_an_explicit_assertion_reused_for_two_scopes(emulator):
    assertion = emulator.certificate.assertion(CERT_APP, emulator.token_endpoint(emulator.tenant))
    app = msal.ConfidentialClientApplication(
        CERT_APP,
        authority=f"{emulator.authority}/{emulator.tenant}",
        # One assertion, handed out again for every request.
        client_credential={"client_assertion": lambda: assertion},
        instance_discovery=False,
    )
    for scope in (emulator.vault_scope, f"{API}/.default"):
        result = app.acquire_token_for_client(scopes=[scope])
        assert "access_token" in result, result


@pytest.fixture
def app_service(emulator, monkeypatch):
    """The App Service environment of a managed identity."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.ready["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.ready["identity_header"])
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return emulator


def test_managed_identity_system_assigned(app_service):
    claims = jwt_claims(ManagedIdentityCredential().get_token(app_service.vault_scope).token)
    system = app_service.ready["system_assigned_identity"]
    assert (claims["appid"], claims["oid"]) == (system["client_id"], system["object_id"])
    assert claims["iss"] == f"https://sts.windows.net/{app_service.tenant}/"


@pytest.mark.parametrize(
    "selector",
    [
        lambda mi: {"client_id": mi["client_id"]},
        lambda mi: {"identity_config": {"object_id": mi["object_id"]}},
        lambda mi: {"identity_config": {"resource_id": mi["resource_id"]}},
    ],
    ids=["client_id", "object_id", "resource_id"],
)
def test_managed_identity_user_assigned_by_each_id(app_service, selector):
    (identity,) = [
        mi for mi in app_service.ready["user_assigned_identities"] if mi["resource_id"].endswith("/" + USER_IDENTITY)
    ]
    credential = ManagedIdentityCredential(**selector(identity))
    claims = jwt_claims(credential.get_token(app_service.vault_scope).token)
    assert claims["appid"] == identity["client_id"]
    assert claims["oid"] == identity["object_id"]
    assert claims["xms_mirid"] == identity["resource_id"]


def test_workload_identity_from_a_projected_token_file(emulator):
    credential = WorkloadIdentityCredential(
        tenant_id=emulator.tenant,
        client_id=WORKLOAD_APP,
        token_file_path=emulator.token_file,
        **emulator.client_kwargs(),
    )
    claims = jwt_claims(credential.get_token(emulator.vault_scope).token)
    assert (claims["appid"], claims["appidacr"]) == (WORKLOAD_APP, "2")
