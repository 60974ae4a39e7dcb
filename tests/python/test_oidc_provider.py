"""End to end with an independent OpenID provider (panva/oidc-provider on Node.js): Lakegate finds its keys by
discovery, validates its RS256 access tokens, and exchanges them for a notebook service."""

import base64
import hashlib
import json
import select
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, eventually, free_port

NOTEBOOK_SECRET = "notebook-secret-for-tests"


# How long the provider may take to print that it listens, and how often it is started on a new free port.
START_SECONDS = 30
START_ATTEMPTS = 3


class OidcProvider:
    def __init__(self):
        script = REPO / "tests" / "oidc" / "provider.mjs"
        failures = []
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with tempfile.TemporaryFile() as errors:
                self.process = subprocess.Popen(["node", str(script), str(self.port)], stdout=subprocess.PIPE,
                                                stderr=errors, text=True)
                # A provider that neither listens nor exits fails after a while, not when the suite's time is up;
                # one whose free port was taken first exits, and is started again on another.
                readable, _, _ = select.select([self.process.stdout], [], [], START_SECONDS)
                line = self.process.stdout.readline() if readable else ""
                if line.startswith("ready "):
                    self.issuer = line.split()[1]
                    return
                self.stop()
                errors.seek(0)
                failures.append(f"{line!r}, stderr {errors.read().decode(errors='replace')!r}")
        raise AssertionError(f"the provider did not start ({START_SECONDS}s each time): {failures}")

    def token(self, person):
        data = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
        request = urllib.request.Request(f"{self.issuer}/token", data=data)
        basic = base64.b64encode(f"{person}:{person}-secret".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access_token"]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def provider():
    p = OidcProvider()
    yield p
    p.stop()


@pytest.fixture
def lakegate_with_provider(provider, start_lakegate):
    digest = hashlib.sha256(NOTEBOOK_SECRET.encode()).hexdigest()
    config = f"""
[[identity.issuers]]
issuer = "{provider.issuer}"
discovery = true
audiences = ["lakegate"]
algorithms = ["RS256"]
attribute_claims = {{ region = "region" }}

[token_service]
clients = [{{ id = "notebook", secret_sha256 = "{digest}" }}]
"""
    return start_lakegate(config=config)


def post_json(url, token, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def exchange(lg, subject_token):
    data = urllib.parse.urlencode({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": subject_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }).encode()
    request = urllib.request.Request(f"{lg.control_url}/oauth2/token", data=data)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"notebook:{NOTEBOOK_SECRET}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def test_tokens_of_a_real_provider_are_validated_through_discovery(provider, lakegate_with_provider):
    lg = lakegate_with_provider
    alice = provider.token("alice")
    url = f"{lg.control_url}/v1/authorize"
    assert post_json(url, alice, {"action": "s3:GetObject", "resource": "s3://lake/sales/a.csv"})[1]["decision"] == "allow"
    assert post_json(url, alice, {"action": "s3:GetObject", "resource": "s3://lake/hr/a.csv"})[1]["decision"] == "deny"
    carol = provider.token("carol")
    assert post_json(url, carol, {"action": "s3:GetObject", "resource": "s3://lake/hr/a.csv"})[1]["decision"] == "allow"


def test_the_dev_issuer_is_off_once_a_real_issuer_is_configured(lakegate_with_provider):
    lg = lakegate_with_provider
    dev = lg.token("alice", ["analysts"])
    status, problem = post_json(f"{lg.control_url}/v1/authorize", dev, {"action": "s3:GetObject", "resource": "s3://lake/public/a"})
    assert status == 401
    assert "not trusted" in problem["detail"]


def test_a_notebook_exchanges_a_provider_token_and_the_audit_names_user_and_actor(provider, lakegate_with_provider):
    lg = lakegate_with_provider
    exchanged = exchange(lg, provider.token("alice"))
    c = claims(exchanged)
    assert c["sub"] == "alice"
    assert c["act"]["sub"] == "notebook"
    assert c["orig_iss"] == provider.issuer
    status, decision = post_json(f"{lg.control_url}/v1/authorize", exchanged,
                                 {"action": "s3:PutObject", "resource": "s3://lake/sales/b.csv"})
    assert (status, decision["decision"]) == (200, "allow")
    event = eventually("the audit event", lambda: next(
        (e for e in lg.audit_events() if e["request_id"] == decision["request_id"]), None))
    assert event["principal"]["subject"] == "alice"
    assert event["principal"]["issuer"] == provider.issuer
    assert [a["subject"] for a in event["actors"]] == ["notebook"]
