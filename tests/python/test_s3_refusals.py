"""Bad input on the S3 front: every request here is refused with the S3 error a client expects, AND the refusal
is in the audit log under the request id the response carries. Also: revocation by a policy edit."""

import datetime
import re
import time

import botocore
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3_support import REGION, S3Gate, error_code


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


@pytest.fixture(scope="module")
def creds(gate):
    return gate.assume("alice", "analysts")


def signed_headers(gate, creds, method, path, body=b"", when=None):
    """Headers of a SigV4-signed request for `path` (an S3 path as botocore would send it), `Host` included."""
    request = AWSRequest(method=method, url=f"{gate.endpoint}{path}", data=body)
    auth = S3SigV4Auth(Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]), "s3", REGION)
    if when is not None:
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            auth.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = original
    else:
        auth.add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = f"127.0.0.1:{gate.s3_port}"
    return headers


def assert_refused_and_audited(gate, response, code, status=None):
    got_status, headers, body = response
    assert error_code(body) == code, body
    if status is not None:
        assert got_status == status
    request_id = headers["x-amz-request-id"]
    events = gate.audited(request_id)
    assert events, f"no audit event for refused request {request_id}"
    assert all(e["decision"] in ("deny", "error") for e in events), events
    return events


def test_a_browser_form_upload_without_its_credential_is_refused_and_audited(gate):
    # POST Object: the signature is in the form, so no Authorization header; this one names no credential.
    # (test_s3_post_object.py has the forms that work.)
    boundary = "lakegateboundary"
    fields = {"key": "sales/form.txt", "x-amz-algorithm": "AWS4-HMAC-SHA256", "policy": "e30=", "x-amz-signature": "00"}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nhello\r\n')
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = gate.raw("POST", "/lake", headers, body)
    assert b"x-amz-credential" in response[2], response
    assert_refused_and_audited(gate, response, "InvalidArgument", 400)


def test_an_altered_signature_is_refused_and_audited(gate, creds):
    headers = signed_headers(gate, creds, "GET", "/lake/sales/2024/q1.csv")
    assert gate.raw("GET", "/lake/sales/2024/q1.csv", headers)[0] == 200, "the unaltered request works"
    sig = re.search(r"Signature=([0-9a-f]+)", headers["Authorization"]).group(1)
    flipped = ("0" if sig[-1] != "0" else "1")
    headers["Authorization"] = headers["Authorization"].replace(sig, sig[:-1] + flipped)
    assert_refused_and_audited(gate, gate.raw("GET", "/lake/sales/2024/q1.csv", headers), "SignatureDoesNotMatch", 403)


def test_expired_credentials_are_refused_and_audited(gate):
    short = gate.minted("alice", "analysts", "1s")
    time.sleep(2.1)
    headers = signed_headers(gate, short, "GET", "/lake/sales/2024/q1.csv")
    assert_refused_and_audited(gate, gate.raw("GET", "/lake/sales/2024/q1.csv", headers), "ExpiredToken", 400)


def test_a_presigned_url_past_its_expiry_is_refused_and_audited(gate, creds):
    s3 = gate.client(creds)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "public/cities.csv"}, ExpiresIn=1)
    path = url.removeprefix(gate.endpoint)
    time.sleep(2.1)
    assert_refused_and_audited(gate, gate.raw("GET", path), "AccessDenied", 403)


def test_a_presigned_url_read_in_ranges_is_decided_each_time_bound_to_its_host_and_refused_once_expired(gate, creds):
    # Lakegate keeps a presigned URL it has verified (a reader fetches one object in ranges through one URL): each
    # request is still decided and audited on its own, the URL still names its host, and it ends at its expiry.
    s3 = gate.client(creds)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "public/cities.csv"}, ExpiresIn=3)
    signed = time.monotonic()
    path = url.removeprefix(gate.endpoint)
    request_ids = []
    for first in (0, 3, 0):
        status, headers, body = gate.raw("GET", path, {"Range": f"bytes={first}-{first + 2}"})
        assert (status, len(body)) == (206, 3), body
        request_ids.append(headers["x-amz-request-id"])
    for request_id in request_ids:
        [event] = gate.audited(request_id)
        assert (event["action"], event["decision"], event["outcome"]["status"]) == ("s3:GetObject", "allow", 206)
    # The same target sent to another host name is another request: the signature covers the host.
    elsewhere = gate.raw("GET", path, {"Host": "elsewhere.example:9000", "Range": "bytes=0-2"})
    assert_refused_and_audited(gate, elsewhere, "SignatureDoesNotMatch", 403)
    time.sleep(max(0.0, 3.5 - (time.monotonic() - signed)))
    [event] = assert_refused_and_audited(gate, gate.raw("GET", path, {"Range": "bytes=0-2"}), "AccessDenied", 403)
    assert "expired" in event["reason"]


@pytest.mark.parametrize("expires_in", [0, -7])
def test_a_presigned_url_valid_for_no_time_is_access_denied_as_expired(gate, creds, expires_in):
    s3 = gate.client(creds)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "lake", "Key": "public/cities.csv"}, ExpiresIn=expires_in
    )
    assert f"X-Amz-Expires={expires_in}&" in url
    [event] = assert_refused_and_audited(gate, gate.raw("GET", url.removeprefix(gate.endpoint)), "AccessDenied", 403)
    assert "expired" in event["reason"]


def test_a_refused_upload_leaves_its_connection_fit_for_the_next_request(gate, creds):
    # botocore sends `Expect: 100-continue` and, refused, never sends the body; the next request on the same
    # connection must be read as sent, not with its first bytes taken for that body.
    s3 = gate.client(creds)
    for _ in range(3):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket="lake", Key="hr/planted.txt", Body=b"x" * 1024)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert s3.get_object(Bucket="lake", Key="sales/2024/q1.csv")["Body"].read().startswith(b"region,amount")


def test_a_body_sent_without_waiting_for_100_continue_after_a_refusal_is_not_read_as_the_next_request(gate):
    # botocore waits one second for `100 Continue`, then sends the body anyway: when a refusal takes longer (a
    # loaded machine, an audit write), the body arrives after the answer. The answer ends the connection, so those
    # bytes can never be read as the next request on it.
    import socket

    token = gate.token("alice", "analysts")
    port = int(gate.endpoint.rsplit(":", 1)[1])
    body = b"GET /lake/sales/2024/q1.csv HTTP/1.1\r\nHost: x\r\n\r\n".ljust(1024, b"x")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"PUT /lake/hr/planted.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 1024\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            assert chunk, f"the connection closed before an answer's head: {answer!r}"
            answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 403"), answer
        assert b"connection: close" in head, answer
        conn.sendall(body)  # late, as botocore sends it
        rest = b""
        while chunk := conn.recv(65536):
            rest += chunk
        assert b"HTTP/1.1 200" not in rest and b"HTTP/1.1 400" not in rest, rest


def test_an_unsigned_x_amz_header_is_refused_and_audited(gate, creds):
    headers = signed_headers(gate, creds, "GET", "/lake/sales/2024/q1.csv")
    headers["x-amz-copy-source"] = "lake/hr/salaries.csv"
    assert_refused_and_audited(gate, gate.raw("GET", "/lake/sales/2024/q1.csv", headers), "AccessDenied", 403)


def test_a_request_signed_twenty_minutes_ago_is_refused_as_skewed_and_audited(gate, creds):
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    headers = signed_headers(gate, creds, "GET", "/lake/sales/2024/q1.csv", when=past)
    assert_refused_and_audited(gate, gate.raw("GET", "/lake/sales/2024/q1.csv", headers), "RequestTimeTooSkewed", 403)


@pytest.mark.parametrize(
    "path",
    [
        "/lake/sales/../hr/salaries.csv",
        "/lake/sales/%2E%2E/hr/salaries.csv",
        "/lake/sales%2F..%2Fhr%2Fsalaries.csv",
        "/lake/sales/%252E%252E/hr/salaries.csv",
        "/lake%2Fhr/salaries.csv",
        "/lake/sales//hr/salaries.csv",
    ],
)
def test_path_tricks_are_refused_and_audited(gate, path):
    # Bearer auth: nothing about the path is covered by a signature, so only the path rules can refuse it.
    headers = {"Authorization": f"Bearer {gate.token('alice', 'analysts')}"}
    status, resp_headers, body = gate.raw("GET", path, headers)
    assert status in (400, 403), (status, body)
    assert error_code(body) in ("AccessDenied", "InvalidBucketName"), body
    events = gate.audited(resp_headers["x-amz-request-id"])
    assert events and all(e["decision"] in ("deny", "error") for e in events)
    assert b"bob,1" not in body


def test_an_oversized_delete_objects_body_is_refused_and_audited(gate):
    headers = {"Authorization": f"Bearer {gate.token('alice', 'analysts')}", "Content-Type": "application/xml"}
    key = "sales/" + "k" * 1000
    body = ("<Delete>" + f"<Object><Key>{key}</Key></Object>" * 2100 + "</Delete>").encode()
    assert len(body) > 2 * 1024 * 1024
    assert_refused_and_audited(gate, gate.raw("POST", "/lake?delete", headers, body), "MaxMessageLengthExceeded", 400)


def test_a_body_that_does_not_match_its_signed_hash_stores_nothing(gate, creds):
    body = b"the signed body"
    headers = signed_headers(gate, creds, "PUT", "/lake/sales/tampered.txt", body=body)
    tampered = b"X" * len(body)
    status, resp_headers, resp = gate.raw("PUT", "/lake/sales/tampered.txt", headers, tampered)
    assert error_code(resp) == "XAmzContentSHA256Mismatch", resp
    s3 = gate.client(creds)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="lake", Key="sales/tampered.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert gate.audited(resp_headers["x-amz-request-id"])


def test_vended_credentials_lose_sales_on_the_next_request_after_the_grant_is_removed(start_lakegate):
    # A server of its own: this test edits the policy file (the harness polls it every second).
    gate = S3Gate(start_lakegate())
    s3 = gate.client(gate.assume("alice", "analysts"))
    assert s3.get_object(Bucket="lake", Key="sales/2024/q1.csv")["Body"].read()
    policy = gate.data / "policies" / "s3.cedar"
    text = policy.read_text()
    start = text.index('@id("lake-sales-analysts")')
    end = text.index(");", start) + 2
    policy.write_text(text[:start] + text[end:])
    deadline = time.monotonic() + 30
    code = None
    while time.monotonic() < deadline:
        try:
            s3.get_object(Bucket="lake", Key="sales/2024/q1.csv")
        except botocore.exceptions.ClientError as e:
            code = e.response["Error"]["Code"]
            break
        time.sleep(0.2)
    assert code == "AccessDenied", "the same credentials must stop working once the policy is reloaded"
    # public/ is untouched by the edit.
    assert s3.get_object(Bucket="lake", Key="public/cities.csv")["Body"].read()


@pytest.mark.parametrize(
    "operation",
    [
        lambda s3: s3.put_object(Bucket="lake", Key="sales/tagged.txt", Body=b"x", Tagging="a=b"),
        lambda s3: s3.create_multipart_upload(Bucket="lake", Key="sales/tagged.txt", Tagging="a=b"),
        lambda s3: s3.copy_object(
            Bucket="lake",
            Key="sales/tagged.txt",
            CopySource={"Bucket": "lake", "Key": "public/cities.csv"},
            Tagging="a=b",
            TaggingDirective="REPLACE",
        ),
    ],
    ids=["PutObject", "CreateMultipartUpload", "CopyObject"],
)
def test_object_tags_are_refused_not_dropped_and_nothing_is_stored(gate, creds, operation):
    s3 = gate.client(creds)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        operation(s3)
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert "x-amz-tagging" in e.value.response["Error"]["Message"]
    [event] = gate.audited(e.value.response["ResponseMetadata"]["RequestId"])
    assert event["decision"] == "error" and event["outcome"]["error_code"] == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="lake", Key="sales/tagged.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="lake", Prefix="sales/tagged.txt")


def test_an_unknown_x_amz_header_is_refused_not_dropped(gate, creds):
    s3 = gate.client(creds)

    def add_header(request, **_):
        request.headers["x-amz-write-offset-bytes"] = "0"

    s3.meta.events.register("before-sign.s3.PutObject", add_header)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="lake", Key="sales/appended.txt", Body=b"x")
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    assert "x-amz-write-offset-bytes" in e.value.response["Error"]["Message"]
    s3.meta.events.unregister("before-sign.s3.PutObject", add_header)
    # What SDKs send routinely still goes through.
    s3.put_object(Bucket="lake", Key="sales/plain.txt", Body=b"x", ChecksumAlgorithm="SHA256", Metadata={"k": "v"})
    assert s3.head_object(Bucket="lake", Key="sales/plain.txt")["Metadata"] == {"k": "v"}


def test_a_request_outside_the_credentials_scope_is_refused_with_exactly_one_record(gate):
    # carol may read hr/ by policy, but credentials of the lakegate-sales role reach sales/ only.
    creds = gate.assume("carol", "hr", role="arn:aws:iam::000000000000:role/lakegate-sales")
    path = "/lake/hr/employees.csv"
    response = gate.raw("GET", path, signed_headers(gate, creds, "GET", path))
    assert_refused_and_audited(gate, response, "AccessDenied", 403)
    time.sleep(0.5)  # a second record, were there one, is written by the same batch
    request_id = response[1]["x-amz-request-id"]
    events = gate.audited(request_id)
    assert len(events) == 1, events
    assert events[0]["reason"] == "outside the credential's scope" and events[0]["principal"]["subject"] == "carol"
