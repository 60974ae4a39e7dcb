"""The remote-backend path: Lakegate in front of a separate S3 server process (moto, with request signing
enforced), forwarding allowed requests re-signed with the store's own credentials."""

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading

import boto3
import botocore
import pytest

from conftest import Lakegate, eventually, free_port, wait_for_port
from s3_support import REGION, S3Gate


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A moto S3 server whose first four requests are unauthenticated (to create the store's IAM user, key,
    policy and bucket); every request after that must be signed with that key."""
    # The moto of the test venv (requirements.txt), before any other on PATH: older ones refuse botocore's own
    # signature of a key holding `=` or `%`.
    beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
    moto = beside if os.path.exists(beside) else shutil.which("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
    with open(log, "wb") as out:
        proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        anon = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="AKIASETUP", aws_secret_access_key="setup")
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="lakegate")
        key = iam.create_access_key(UserName="lakegate")["AccessKey"]
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lakegate", PolicyName="all", PolicyDocument=json.dumps(everything))
        direct = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        direct.create_bucket(Bucket="lake")
        direct.put_object(Bucket="lake", Key="hr/salaries.csv", Body=b"name,salary\n")
        yield {"endpoint": endpoint, "port": port, "key": key, "direct": direct, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def remote_gate(store, endpoint, *extra):
    """A running Lakegate in front of `store` at `endpoint`, with the store's key and any `extra` backend lines."""
    key = store["key"]
    lines = "\n".join(extra)
    config = f"""
[s3.backend]
kind = "remote"
endpoint = "{endpoint}"
region = "{REGION}"
access_key_id = "{key['AccessKeyId']}"
secret_access_key = "{key['SecretAccessKey']}"
{lines}
"""
    return Lakegate(config=config)


@pytest.fixture(scope="module")
def gate(store):
    server = remote_gate(store, store["endpoint"])
    yield S3Gate(server)
    server.stop()


def test_the_store_itself_refuses_requests_not_signed_with_its_key(store):
    wrong = boto3.client(
        "s3",
        endpoint_url=store["endpoint"],
        region_name=REGION,
        aws_access_key_id=store["key"]["AccessKeyId"],
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_objects_v2(Bucket="lake")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_allowed_requests_are_forwarded_re_signed_with_the_store_key(gate, store):
    alice = gate.client(gate.assume("alice", "analysts"))
    data = os.urandom(3 * 1024 * 1024)
    alice.put_object(Bucket="lake", Key="sales/remote.bin", Body=data)
    # The object is in the store, put there by Lakegate with the store's credentials.
    assert store["direct"].get_object(Bucket="lake", Key="sales/remote.bin")["Body"].read() == data
    assert alice.get_object(Bucket="lake", Key="sales/remote.bin", Range="bytes=0-99")["Body"].read() == data[:100]
    # No listing here: moto's signature check mis-canonicalises a `/` in a query value and refuses even
    # botocore's own signed `list_objects_v2(Prefix="sales/")`; listings are covered against the embedded store.
    alice.delete_object(Bucket="lake", Key="sales/remote.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        store["direct"].head_object(Bucket="lake", Key="sales/remote.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_the_same_checks_apply_in_front_of_a_remote_store(gate):
    alice = gate.client(gate.assume("alice", "analysts"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_object(Bucket="lake", Key="hr/salaries.csv")
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_the_store_errors_come_back_as_s3_errors(gate):
    alice = gate.client(gate.assume("alice", "analysts"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_object(Bucket="lake", Key="sales/missing.txt")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_hive_escaped_keys_reach_the_store_as_they_are(gate, store):
    alice = gate.client(gate.assume("alice", "analysts"))
    key = "sales/hive/ts=2024-01-01 00%3A00%3A00/part-0.parquet"
    alice.put_object(Bucket="lake", Key=key, Body=b"partition")
    # Stored under the literal key: decoded once by Lakegate, encoded once for the store, decoded once by it.
    assert store["direct"].get_object(Bucket="lake", Key=key)["Body"].read() == b"partition"
    assert alice.get_object(Bucket="lake", Key=key)["Body"].read() == b"partition"
    # boto3 lists with encoding-type=url: the store encodes, boto3 decodes, the key is the one stored.
    listed = alice.list_objects_v2(Bucket="lake", Prefix="sales/hive/ts=2024-01-01 00%3A")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    # Without encoding-type the store's listing carries the key as it is.
    bearer = {"Authorization": f"Bearer {gate.token('alice', 'analysts')}"}
    raw = gate.raw("GET", "/lake?list-type=2&prefix=sales%2Fhive%2F", bearer)[2]
    assert f"<Key>{key}</Key>".encode() in raw, raw
    alice.delete_object(Bucket="lake", Key=key)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        store["direct"].head_object(Bucket="lake", Key=key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_browser_form_upload_reaches_the_store_as_a_put(gate, store):
    import requests

    alice = gate.client(gate.assume("alice", "analysts"))
    form = alice.generate_presigned_post("lake", "sales/form.csv", Fields={"Content-Type": "text/csv"},
                                         Conditions=[{"Content-Type": "text/csv"}])
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f.csv", b"a,b\n1,2\n")}, timeout=30)
    assert r.status_code == 204, r.text
    stored = store["direct"].get_object(Bucket="lake", Key="sales/form.csv")
    assert stored["Body"].read() == b"a,b\n1,2\n" and stored["ContentType"] == "text/csv"
    assert r.headers["ETag"] == stored["ETag"]


@pytest.fixture(scope="module")
def vhost_gate(store):
    """Lakegate in front of the same store addressed virtual-hosted at `localhost`: bucket `lake` is then the host
    `lake.localhost`, which no resolver of this machine knows and Lakegate answers with loopback (RFC 6761)."""
    server = remote_gate(store, f"http://localhost:{store['port']}", "path_style = false")
    yield S3Gate(server)
    server.stop()


def store_requests(store):
    """The requests the store has served so far, as (method, path): moto's server logs each request line."""
    return re.findall(r'"([A-Z]+) (\S+) HTTP/1\.1"', store["log"].read_text())


def test_a_virtual_hosted_store_is_sent_the_bucket_in_the_host(vhost_gate, store):
    alice = vhost_gate.client(vhost_gate.assume("alice", "analysts"))
    data = os.urandom(64 * 1024)
    alice.put_object(Bucket="lake", Key="sales/vhost.bin", Body=data)
    # The store took the bucket from the host: the path it was sent names only the key.
    assert ("PUT", "/sales/vhost.bin") in store_requests(store)
    assert store["direct"].get_object(Bucket="lake", Key="sales/vhost.bin")["Body"].read() == data
    assert alice.get_object(Bucket="lake", Key="sales/vhost.bin", Range="bytes=10-19")["Body"].read() == data[10:20]
    listed = alice.list_objects_v2(Bucket="lake", Prefix="sales/vhost")
    assert [o["Key"] for o in listed["Contents"]] == ["sales/vhost.bin"]
    alice.delete_object(Bucket="lake", Key="sales/vhost.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        store["direct"].head_object(Bucket="lake", Key="sales/vhost.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # The same checks apply whatever the addressing.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_object(Bucket="lake", Key="hr/salaries.csv")
    assert e.value.response["Error"]["Code"] == "AccessDenied"


DOTTED_LAKE_POLICY = """
@id("dotted-lake-sales-analysts")
permit (
  principal in Group::"analysts",
  action in [Action::"Read", Action::"Write", Action::"List"],
  resource in Prefix::"my.lake/sales/"
);
"""


def test_a_bucket_whose_name_is_no_host_label_goes_path_style(vhost_gate, store):
    # `my.lake.localhost` would be two levels under the endpoint, which a TLS store's wildcard certificate does
    # not cover: as the AWS SDKs do, such a bucket is named in the path.
    store["direct"].create_bucket(Bucket="my.lake")
    (vhost_gate.server.policy_dir / "dotted.cedar").write_text(DOTTED_LAKE_POLICY)
    alice = vhost_gate.client(vhost_gate.assume("alice", "analysts"))

    def put():
        try:
            alice.put_object(Bucket="my.lake", Key="sales/a.csv", Body=b"a,b\n")
            return True
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDenied", e.response
            return False

    eventually("the policy for my.lake to be loaded", put)
    assert ("PUT", "/my.lake/sales/a.csv") in store_requests(store)
    assert store["direct"].get_object(Bucket="my.lake", Key="sales/a.csv")["Body"].read() == b"a,b\n"
    assert alice.get_object(Bucket="my.lake", Key="sales/a.csv")["Body"].read() == b"a,b\n"


class HopByHopStore(http.server.BaseHTTPRequestHandler):
    """A stand-in store, not an S3 implementation: it answers every GET with one object and response headers no
    real store sends together, which a proxy must not pass on (RFC 9110 section 7.6.1): fields its `Connection`
    names, the fixed hop-by-hop ones, and its own name and request ids."""

    protocol_version = "HTTP/1.1"
    BODY = b"name,total\n"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Connection", "keep-alive, X-Store-Private")
        self.send_header("X-Store-Private", "the store's hop only")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Server", "stand-in")
        self.send_header("x-amz-request-id", "STORE-ID")
        self.send_header("x-amz-id-2", "STORE-HOST-ID")
        self.send_header("Content-Type", "text/csv")
        self.send_header("x-amz-meta-owner", "alice")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args):
        pass


def test_the_stores_hop_by_hop_headers_and_ids_stay_on_its_hop():
    store = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HopByHopStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    server = Lakegate(config=f"""
[s3.backend]
kind = "remote"
endpoint = "http://127.0.0.1:{store.server_address[1]}"
region = "{REGION}"
access_key_id = "AKIASTANDIN"
secret_access_key = "stand-in"
""")
    try:
        gate = S3Gate(server)
        token = gate.token("alice", "analysts")
        status, headers, body = gate.raw("GET", "/lake/sales/q1.csv", {"Authorization": f"Bearer {token}"})
        assert (status, body) == (200, HopByHopStore.BODY)
        got = {k.lower(): v for k, v in headers.items()}
        assert "x-store-private" not in got and "keep-alive" not in got, got
        assert got.get("server") != "stand-in" and "x-amz-id-2" not in got, got
        # The client hears Lakegate's request id, the one its audit record carries.
        assert got["x-amz-request-id"] != "STORE-ID"
        [event] = gate.audited(got["x-amz-request-id"])
        assert (event["decision"], event["outcome"]["bytes_out"]) == ("allow", len(HopByHopStore.BODY))
        # End-to-end fields pass as the store sent them.
        assert (got["content-type"], got["x-amz-meta-owner"], got["content-length"]) == ("text/csv", "alice", "11")
    finally:
        server.stop()
        store.shutdown()


# ------------------------------------------------------------------ the store's credentials from the AWS chain

# A Lakegate given no keys for the store takes them from the standard AWS chain. Each test below gives it one
# source only: the others are pointed at nothing, so a pass proves that source was used (the store refuses
# requests not signed with credentials it issued).
NO_OTHER_SOURCE = {
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    "AWS_ROLE_ARN": None,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def chain_config(store):
    return f"""
[s3.backend]
kind = "remote"
endpoint = "{store['endpoint']}"
region = "{REGION}"
"""


def store_role(store):
    """An IAM role in the store's account that may do anything, to be assumed by web identity or by IMDS."""
    iam = boto3.client("iam", endpoint_url=store["endpoint"], region_name=REGION,
                       aws_access_key_id=store["key"]["AccessKeyId"],
                       aws_secret_access_key=store["key"]["SecretAccessKey"])
    name = "lakegate-store"
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except botocore.exceptions.ClientError:
        pass
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Federated": "lakegate"}, "Action": "sts:AssumeRoleWithWebIdentity"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/lakegate"}, "Action": "sts:AssumeRole"},
    ]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_role_policy(RoleName=name, PolicyName="all", PolicyDocument=json.dumps(everything))
    return arn


def round_trip(env, store, key):
    """Starts a Lakegate with `env` and no store keys, and writes and reads `key` through it as alice."""
    server = Lakegate(env=env, config=chain_config(store))
    try:
        gate = S3Gate(server)
        alice = gate.client(gate.assume("alice", "analysts"))
        alice.put_object(Bucket="lake", Key=key, Body=b"via the chain")
        assert store["direct"].get_object(Bucket="lake", Key=key)["Body"].read() == b"via the chain"
        assert alice.get_object(Bucket="lake", Key=key)["Body"].read() == b"via the chain"
    finally:
        server.stop()


def test_store_credentials_from_the_environment(store):
    env = dict(NO_OTHER_SOURCE, AWS_ACCESS_KEY_ID=store["key"]["AccessKeyId"],
               AWS_SECRET_ACCESS_KEY=store["key"]["SecretAccessKey"])
    round_trip(env, store, "sales/chain/env.txt")


def test_store_credentials_from_a_named_profile(store, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n"
                           f"[lake-store]\naws_access_key_id = {store['key']['AccessKeyId']}\n"
                           f"aws_secret_access_key = {store['key']['SecretAccessKey']}\n")
    env = dict(NO_OTHER_SOURCE, AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_PROFILE="lake-store")
    round_trip(env, store, "sales/chain/profile.txt")


def test_store_credentials_by_web_identity_as_on_eks(store, tmp_path):
    # What EKS injects into a pod with a service account role: a projected token file and the role's ARN. The
    # STS here is the store's own (moto), reached through the SDK's standard AWS_ENDPOINT_URL_STS; moto does not
    # check the token's signature, so any JWT-shaped token stands in for the cluster's.
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJsYWtlZ2F0ZSJ9.")
    env = dict(NO_OTHER_SOURCE, AWS_WEB_IDENTITY_TOKEN_FILE=str(token), AWS_ROLE_ARN=store_role(store),
               AWS_ROLE_SESSION_NAME="lakegate", AWS_ENDPOINT_URL_STS=store["endpoint"])
    # AssumeRoleWithWebIdentity is unsigned by design, and moto's signature enforcement does not exempt it (it
    # answers 500): moto is told to let exactly one request through unsigned, Lakegate's call at its start.
    import requests

    requests.post(f"{store['endpoint']}/moto-api/reset-auth", data=b"1", timeout=10).raise_for_status()
    round_trip(env, store, "sales/chain/web-identity.txt")


def test_store_credentials_from_instance_metadata(store):
    # EC2's instance metadata service cannot run here: this is a mock of its IMDSv2 protocol (token, role name,
    # role credentials), serving temporary credentials the store's own STS issued for the role.
    import http.server
    import threading

    sts = boto3.client("sts", endpoint_url=store["endpoint"], region_name=REGION,
                       aws_access_key_id=store["key"]["AccessKeyId"],
                       aws_secret_access_key=store["key"]["SecretAccessKey"])
    assumed = sts.assume_role(RoleArn=store_role(store), RoleSessionName="imds")["Credentials"]
    document = json.dumps({
        "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": assumed["AccessKeyId"],
        "SecretAccessKey": assumed["SecretAccessKey"], "Token": assumed["SessionToken"],
        "Expiration": assumed["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "LastUpdated": "2026-01-01T00:00:00Z",
    }).encode()
    asked = []

    class MockImds(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            asked.append(("PUT", self.path))
            ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
            self._answer(b"imds-session-token" if self.path == "/latest/api/token" and ttl else None, ttl=ttl)

        def do_GET(self):
            asked.append(("GET", self.path))
            if self.headers.get("x-aws-ec2-metadata-token") != "imds-session-token":
                return self._answer(None, 401)
            base = "/latest/meta-data/iam/security-credentials/"
            self._answer({base: b"lakegate-store", base + "lakegate-store": document}.get(self.path))

        def _answer(self, body, status=200, ttl=None):
            self.send_response(404 if body is None and status == 200 else status)
            if ttl:
                self.send_header("x-aws-ec2-metadata-token-ttl-seconds", ttl)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    imds = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MockImds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    env = dict(NO_OTHER_SOURCE, AWS_EC2_METADATA_DISABLED="false",
               AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{imds.server_address[1]}/")
    try:
        round_trip(env, store, "sales/chain/imds.txt")
        assert ("PUT", "/latest/api/token") in asked, asked
    finally:
        imds.shutdown()


def test_store_credentials_from_the_container_endpoint_are_fetched_again_before_they_expire(store):
    # ECS's container credentials endpoint (also what EKS Pod Identity serves) cannot run here: this is a mock of
    # its protocol (a full URI on the loopback and an authorization token, as the agent sets them), serving
    # credentials the store's own STS issued. The expiry it states is what the test steers; moto ignores it.
    import datetime
    import http.server
    import threading
    import time

    sts = boto3.client("sts", endpoint_url=store["endpoint"], region_name=REGION,
                       aws_access_key_id=store["key"]["AccessKeyId"],
                       aws_secret_access_key=store["key"]["SecretAccessKey"])
    assumed = sts.assume_role(RoleArn=store_role(store), RoleSessionName="ecs")["Credentials"]
    state = {"fetches": 0, "failing": False, "expires_in": datetime.timedelta(hours=1)}

    class MockContainerEndpoint(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/creds" or self.headers.get("Authorization") != "container-token":
                return self._answer(403, b"{}")
            if state["failing"]:
                return self._answer(500, b"{}")
            state["fetches"] += 1
            expires = datetime.datetime.now(datetime.timezone.utc) + state["expires_in"]
            self._answer(200, json.dumps({
                "AccessKeyId": assumed["AccessKeyId"], "SecretAccessKey": assumed["SecretAccessKey"],
                "Token": assumed["SessionToken"], "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }).encode())

        def _answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MockContainerEndpoint)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    env = dict(NO_OTHER_SOURCE,
               AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{endpoint.server_address[1]}/creds",
               AWS_CONTAINER_AUTHORIZATION_TOKEN="container-token")
    # Four minutes left: inside Lakegate's five-minute margin, so every request finds them due for refresh.
    state["expires_in"] = datetime.timedelta(minutes=4)
    server = Lakegate(env=env, config=chain_config(store))
    try:
        gate = S3Gate(server)
        alice = gate.client(gate.assume("alice", "analysts"))
        key = "sales/chain/container.txt"
        alice.put_object(Bucket="lake", Key=key, Body=b"via the container endpoint")
        assert store["direct"].get_object(Bucket="lake", Key=key)["Body"].read() == b"via the container endpoint"
        before = state["fetches"]
        assert alice.get_object(Bucket="lake", Key=key)["Body"].read() == b"via the container endpoint"
        assert state["fetches"] > before, "credentials due for refresh are fetched again"

        # The endpoint fails: credentials that have not expired yet keep serving.
        state["failing"] = True
        assert alice.get_object(Bucket="lake", Key=key)["Body"].read() == b"via the container endpoint"

        # Credentials that have expired do not: the request is refused as the store being unavailable, and the
        # next request, once the endpoint answers again, goes through.
        state.update(failing=False, expires_in=datetime.timedelta(seconds=-60))
        time.sleep(11)  # Lakegate asks a failing chain again after ten seconds
        alice.head_object(Bucket="lake", Key=key)  # fetches the expired credentials (moto still takes them)
        state["failing"] = True
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            alice.get_object(Bucket="lake", Key=key)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, refused.value.response
        state.update(failing=False, expires_in=datetime.timedelta(hours=1))
        assert alice.get_object(Bucket="lake", Key=key)["Body"].read() == b"via the container endpoint"
    finally:
        server.stop()
        endpoint.shutdown()


def test_no_credentials_anywhere_stops_the_start_with_the_chains_reason(store, tmp_path):
    from conftest import BINARY

    config = tmp_path / "config.toml"
    config.write_text(chain_config(store))
    env = {k: v for k, v in dict(os.environ, **NO_OTHER_SOURCE).items() if v is not None}
    r = subprocess.run([str(BINARY), "serve", "--data-dir", str(tmp_path / "data"), "--config", str(config)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "no credentials for the store from the AWS chain" in r.stdout + r.stderr, r.stdout + r.stderr
