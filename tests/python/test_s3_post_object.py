"""POST Object: browser form uploads, as boto3's `generate_presigned_post` makes them and `requests` sends them.

The form's policy signature authenticates the caller, the policy's conditions bind the upload, and the gate
decides `s3:PutObject` on the key like any PUT: a form signed by alice cannot write where alice may not. Nothing
is stored unless the whole file arrived within the policy.
"""

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from xml.etree import ElementTree
from datetime import datetime, timedelta, timezone

import boto3
import botocore
import pytest
import requests

from s3_support import REGION, S3Gate, error_code


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


@pytest.fixture(scope="module")
def alice_creds(gate):
    return gate.assume("alice", "analysts")


@pytest.fixture(scope="module")
def alice(gate, alice_creds):
    return gate.client(alice_creds)


@pytest.fixture(scope="module")
def carol(gate):
    return gate.client(gate.assume("carol", "hr"))


def key(prefix="sales/forms/"):
    return f"{prefix}{uuid.uuid4().hex}.txt"


def post(form, data=b"hello, form", file_name="upload.txt", **kwargs):
    return requests.post(form["url"], data=form["fields"], files={"file": (file_name, data)}, timeout=30, **kwargs)


def absent(client, bucket, k):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.head_object(Bucket=bucket, Key=k)
    return e.value.response["Error"]["Code"] == "404"


def test_a_presigned_post_stores_the_file_and_is_audited(gate, alice):
    k = key()
    form = alice.generate_presigned_post("lake", k, ExpiresIn=300)
    r = post(form)
    assert r.status_code == 204, r.text
    assert alice.get_object(Bucket="lake", Key=k)["Body"].read() == b"hello, form"
    assert r.headers["ETag"] == alice.head_object(Bucket="lake", Key=k)["ETag"]
    (event,) = gate.audited(r.headers["x-amz-request-id"])
    assert event["action"] == "s3:PutObject" and event["resource"] == f"s3://lake/{k}"
    assert event["principal"]["subject"] == "alice" and event["decision"] == "allow"
    assert event["extra"]["operation"] == "PostObject" and event["outcome"]["status"] == 204
    assert event["outcome"]["bytes_in"] == len(b"hello, form")


def test_the_form_sets_content_type_and_metadata_and_the_key_may_take_the_file_name(alice):
    form = alice.generate_presigned_post(
        "lake",
        "sales/forms/${filename}",
        Fields={"Content-Type": "text/csv", "x-amz-meta-owner": "alice"},
        Conditions=[{"Content-Type": "text/csv"}, {"x-amz-meta-owner": "alice"}, ["starts-with", "$key", "sales/forms/"]],
    )
    name = f"{uuid.uuid4().hex}.csv"
    assert post(form, b"a,b\n1,2\n", file_name=name).status_code == 204
    head = alice.head_object(Bucket="lake", Key=f"sales/forms/{name}")
    assert head["ContentType"] == "text/csv" and head["Metadata"] == {"owner": "alice"}


def test_success_action_status_201_answers_s3s_xml_and_a_redirect_carries_the_etag(alice):
    k = key()
    form = alice.generate_presigned_post("lake", k, Fields={"success_action_status": "201"},
                                         Conditions=[{"success_action_status": "201"}])
    r = post(form)
    assert r.status_code == 201 and r.headers["Content-Type"] == "application/xml"
    answer = {e.tag: e.text for e in ElementTree.fromstring(r.content)}
    assert answer["Key"] == k and answer["Bucket"] == "lake" and answer["ETag"] == r.headers["ETag"]
    assert answer["Location"] == r.headers["Location"] == f"/lake/{k}"

    k = key()
    target = "https://example.com/done"
    form = alice.generate_presigned_post("lake", k, Fields={"success_action_redirect": target},
                                         Conditions=[{"success_action_redirect": target}])
    r = post(form, allow_redirects=False)
    assert r.status_code == 303
    etag = alice.head_object(Bucket="lake", Key=k)["ETag"]
    assert r.headers["Location"] == f"{target}?bucket=lake&key={requests.utils.quote(k, safe='')}&etag=" + \
        requests.utils.quote(etag, safe="")


def test_a_form_signed_by_alice_cannot_write_where_alice_may_not(gate, alice, carol):
    k = key("hr/forms/")
    form = alice.generate_presigned_post("lake", k)
    r = post(form)
    assert r.status_code == 403 and error_code(r.content) == "AccessDenied"
    assert absent(carol, "lake", k)
    (event,) = gate.audited(r.headers["x-amz-request-id"])
    assert event["decision"] == "deny" and event["action"] == "s3:PutObject" and event["resource"] == f"s3://lake/{k}"


def test_the_policy_length_range_is_enforced_and_nothing_is_stored(alice):
    k = key()
    form = alice.generate_presigned_post("lake", k, Conditions=[["content-length-range", 1, 100]])
    r = post(form, b"x" * 101)
    assert r.status_code == 400 and error_code(r.content) == "EntityTooLarge"
    r = post(form, b"")
    assert r.status_code == 400 and error_code(r.content) == "EntityTooSmall"
    assert absent(alice, "lake", k)
    assert post(form, b"x" * 100).status_code == 204


def test_a_condition_that_does_not_hold_or_a_field_it_does_not_name_is_refused(alice):
    k = key()
    form = alice.generate_presigned_post("lake", k, Conditions=[["starts-with", "$Content-Type", "image/"]],
                                         Fields={"Content-Type": "text/html"})
    r = post(form)
    assert r.status_code == 403 and b"Policy Condition failed" in r.content
    form = alice.generate_presigned_post("lake", k)
    form["fields"]["x-amz-meta-planted"] = "yes"
    r = post(form)
    assert r.status_code == 403 and b"Extra input fields: x-amz-meta-planted" in r.content
    assert absent(alice, "lake", k)


def test_a_changed_policy_or_key_breaks_the_signature_or_the_policy(alice):
    k = key()
    form = alice.generate_presigned_post("lake", k)
    doc = json.loads(base64.b64decode(form["fields"]["policy"]))
    doc["conditions"] = [c for c in doc["conditions"] if "key" not in c] + [["starts-with", "$key", ""]]
    forged = dict(form, fields=dict(form["fields"], policy=base64.b64encode(json.dumps(doc).encode()).decode()))
    r = post(forged)
    assert r.status_code == 403 and error_code(r.content) == "SignatureDoesNotMatch"
    other = dict(form, fields=dict(form["fields"], key=key()))
    r = post(other)
    assert r.status_code == 403 and b"Policy Condition failed" in r.content
    assert absent(alice, "lake", k) and absent(alice, "lake", other["fields"]["key"])


def test_an_expired_policy_is_refused(gate, alice_creds, alice):
    k = key()
    form = signed_form(alice_creds, k, expiration=datetime.now(timezone.utc) - timedelta(seconds=5))
    r = requests.post(f"{gate.endpoint}/lake", data=form, files={"file": ("f", b"late")}, timeout=30)
    assert r.status_code == 403 and b"Policy expired" in r.content
    assert absent(alice, "lake", k)


def test_an_unsigned_form_is_refused_and_a_sigv2_form_names_the_fix(gate, alice_creds, alice):
    k = key()
    r = requests.post(f"{gate.endpoint}/lake", data={"key": k}, files={"file": ("f", b"anon")}, timeout=30)
    assert r.status_code == 403 and error_code(r.content) == "AccessDenied"
    # boto3's default for presigned POSTs (without signature_version='s3v4') is Signature Version 2.
    default = boto3.client("s3", endpoint_url=gate.endpoint, region_name=REGION,
                           aws_access_key_id=alice_creds["AccessKeyId"],
                           aws_secret_access_key=alice_creds["SecretAccessKey"],
                           aws_session_token=alice_creds["SessionToken"])
    form = default.generate_presigned_post("lake", k)
    assert "AWSAccessKeyId" in form["fields"]
    r = post(form)
    assert r.status_code == 400 and error_code(r.content) == "InvalidRequest"
    assert b"signature_version" in r.content
    assert absent(alice, "lake", k)


def test_an_upload_cut_off_mid_file_stores_nothing(gate, alice):
    k = key()
    form = alice.generate_presigned_post("lake", k)
    body, boundary = multipart(form["fields"], b"y" * 200_000)
    port = int(gate.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST /lake HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        s.sendall(body[: len(body) // 2])
    time.sleep(1.0)
    assert absent(alice, "lake", k)


def test_malformed_forms_get_s3_errors(gate):
    url = f"{gate.endpoint}/lake"
    r = requests.post(url, data=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and error_code(r.content) == "MalformedPOSTRequest"
    r = requests.post(url, data=b"", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and error_code(r.content) == "MalformedPOSTRequest"
    r = requests.post(url, files={"key": (None, "sales/x")}, timeout=30)
    assert r.status_code == 400 and error_code(r.content) == "IncorrectNumberOfFilesInPostRequest"
    r = requests.post(f"{url}/sales/x", files={"file": ("f", b"x")}, timeout=30)
    assert r.status_code == 400 and error_code(r.content) == "InvalidRequest"


# --------------------------------------------------------------------------------------------- helpers


def signed_form(creds, k, expiration, bucket="lake"):
    """A SigV4 POST form built by hand, for policies boto3 will not make (an expiration in the past)."""
    now = datetime.now(timezone.utc)
    date, stamp = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{creds['AccessKeyId']}/{date}/{REGION}/s3/aws4_request"
    fields = {
        "key": k,
        "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": credential,
        "x-amz-date": stamp,
        "x-amz-security-token": creds["SessionToken"],
    }
    policy = {
        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "conditions": [{"bucket": bucket}] + [{n: v} for n, v in fields.items()],
    }
    fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    signing = ("AWS4" + creds["SecretAccessKey"]).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
    fields["x-amz-signature"] = hmac.new(signing, fields["policy"].encode(), hashlib.sha256).hexdigest()
    return fields


def multipart(fields, data):
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n".encode() + data
    out += f"\r\n--{boundary}--\r\n".encode()
    return out, boundary


def test_a_part_header_that_never_ends_is_refused_without_being_buffered(gate):
    boundary = "b"
    endless = f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\nX-Filler: ".encode() + b"x" * 200_000
    r = requests.post(f"{gate.endpoint}/lake", data=endless,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    assert r.status_code == 400 and error_code(r.content) == "MalformedPOSTRequest"
