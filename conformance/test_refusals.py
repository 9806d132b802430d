"""What Azure refuses, the emulator refuses, and Microsoft's clients report it: an unknown
tenant, client or resource, a token from another tenant at the vault, a managed identity that
is not assigned, an expired assertion presented again, and Key Vault's throttling."""

import time

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
)
from azure.keyvault.secrets import SecretClient

from conftest import CERT_APP, OTHER_APP, OTHER_SECRET, OTHER_TENANT, SECRET, SECRET_APP


def refusal(credential, scope):
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(scope)
    return str(caught.value)


def test_unknown_tenant(emulator):
    # MSAL reads the tenant's OpenID configuration first; Entra answers AADSTS90002 there.
    credential = ClientSecretCredential("nowhere", SECRET_APP, SECRET, **emulator.client_kwargs())
    assert "Unable to get authority configuration" in refusal(credential, emulator.vault_scope)
    r = requests.get(
        f"{emulator.authority}/nowhere/v2.0/.well-known/openid-configuration", verify=emulator.ca, timeout=30
    )
    assert r.status_code == 400
    assert r.json()["error_codes"] == [90002]
    # At the token endpoint itself, the same code.
    r = requests.post(
        emulator.token_endpoint("nowhere"),
        data={"grant_type": "client_credentials", "client_id": SECRET_APP, "client_secret": SECRET, "scope": emulator.vault_scope},
        verify=emulator.ca,
        timeout=30,
    )
    assert (r.status_code, r.json()["error_codes"]) == (400, [90002])


def test_unknown_client(emulator):
    credential = ClientSecretCredential(emulator.tenant, "ghost-app", SECRET, **emulator.client_kwargs())
    assert "AADSTS700016" in refusal(credential, emulator.vault_scope)


def test_wrong_secret(emulator):
    credential = ClientSecretCredential(emulator.tenant, SECRET_APP, "not-it", **emulator.client_kwargs())
    assert "AADSTS7000215" in refusal(credential, emulator.vault_scope)


def test_unknown_resource(emulator):
    credential = ClientSecretCredential(emulator.tenant, SECRET_APP, SECRET, **emulator.client_kwargs())
    assert "AADSTS500011" in refusal(credential, "api://not-registered/.default")


def test_a_token_from_another_tenant_is_refused_at_the_vault(emulator):
    credential = ClientSecretCredential(OTHER_TENANT, OTHER_APP, OTHER_SECRET, **emulator.client_kwargs())
    token = credential.get_token(emulator.vault_scope).token
    r = requests.get(
        emulator.vault_url("pyother") + "secrets?api-version=2025-07-01",
        headers={"Authorization": f"Bearer {token}"},
        verify=emulator.ca,
        timeout=30,
    )
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("AKV10032: Invalid issuer.")
    assert emulator.tenant in r.headers["WWW-Authenticate"]
    # The Key Vault client follows the challenge to the vault's tenant, which this credential
    # is not configured for.
    client = SecretClient(emulator.vault_url("pyother"), credential, connection_verify=emulator.ca)
    with pytest.raises(ClientAuthenticationError):
        client.get_secret("anything")


def test_a_managed_identity_that_is_not_assigned(emulator, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.ready["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.ready["identity_header"])
    credential = ManagedIdentityCredential(client_id="0c1ab2d3-0000-4000-a000-00000000dead")
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)) as caught:
        credential.get_token(emulator.vault_scope)
    assert "No User Assigned or Delegated Managed Identity found" in str(caught.value)


def test_an_expired_assertion_presented_again_stays_refused(emulator):
    expired = emulator.certificate.assertion(
        CERT_APP, emulator.token_endpoint(emulator.tenant), lifetime=60, now=time.time() - 3600
    )
    for _ in range(2):
        credential = ClientAssertionCredential(emulator.tenant, CERT_APP, lambda: expired, **emulator.client_kwargs())
        assert "AADSTS700024" in refusal(credential, emulator.vault_scope)


def test_throttling_answers_429_with_retry_after(emulator):
    credential = ClientSecretCredential(emulator.tenant, SECRET_APP, SECRET, **emulator.client_kwargs())
    client = SecretClient(emulator.vault_url("pythrottle"), credential, connection_verify=emulator.ca, retry_total=0)
    client.set_secret("s", "v")  # the token is fetched before the limits shrink
    # A frozen clock: the 10-second window cannot end while the test runs.
    emulator.admin("POST", "clock", {"frozen": True})
    emulator.admin("PUT", "limits", {"vault_transactions": 2})
    try:
        throttled_before = emulator.admin("GET", "counters").get("throttled", 0)
        client.get_secret("s")
        client.get_secret("s")
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret("s")
        error = caught.value
        assert error.status_code == 429
        assert error.error.code == "Throttled"
        # The clock stands still: the whole 10-second window is left.
        assert error.response.headers["Retry-After"] == "10"
        assert emulator.admin("GET", "counters")["throttled"] == throttled_before + 1
    finally:
        emulator.admin("PUT", "limits", {})
        emulator.admin("POST", "clock", {"frozen": False, "advance": 10})
