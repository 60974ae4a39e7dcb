"""aws-chunked uploads with per-chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), built here by hand as the
SDKs send them: Lakegate verifies every chunk, forwards the decoded bytes with the decoded length, and a chunk
whose signature does not verify aborts the upload so nothing is stored."""

import datetime
import hashlib
import hmac

import botocore
import pytest

from s3_support import REGION, S3Gate, error_code

STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def streaming_put(gate, creds, key: str, chunks: list[bytes], tamper_chunk: int | None = None):
    """Sends a signed aws-chunked PUT of `chunks`; `tamper_chunk` flips a byte of that chunk after signing."""
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{REGION}/s3/aws4_request"
    decoded = sum(len(c) for c in chunks)
    headers = {
        "content-encoding": "aws-chunked",
        "host": f"127.0.0.1:{gate.s3_port}",
        "x-amz-content-sha256": STREAMING,
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(decoded),
        "x-amz-security-token": creds["SessionToken"],
    }
    signed = sorted(headers)
    canonical = "\n".join(
        ["PUT", f"/lake/{key}", "", *[f"{h}:{headers[h]}" for h in signed], "", ";".join(signed), STREAMING]
    )
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256_hex(canonical.encode())])
    k = hmac_sha256(("AWS4" + creds["SecretAccessKey"]).encode(), date)
    for part in (REGION, "s3", "aws4_request"):
        k = hmac_sha256(k, part)
    seed = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    body = b""
    previous = seed
    for i, chunk in enumerate([*chunks, b""]):
        chunk_sts = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, sha256_hex(b""), sha256_hex(chunk)]
        )
        signature = hmac.new(k, chunk_sts.encode(), hashlib.sha256).hexdigest()
        if i == tamper_chunk:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        body += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + chunk + b"\r\n"
        previous = signature
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, SignedHeaders={';'.join(signed)}, Signature={seed}"
    )
    return gate.raw("PUT", f"/lake/{key}", headers, body)


def test_a_chunk_signed_upload_is_decoded_and_stored_whole(gate):
    creds = gate.assume("alice", "analysts")
    chunks = [b"a" * 65536, b"b" * 65536, b"tail"]
    status, headers, body = streaming_put(gate, creds, "sales/streamed.bin", chunks)
    assert status == 200, body
    stored = gate.client(creds).get_object(Bucket="lake", Key="sales/streamed.bin")["Body"].read()
    assert stored == b"".join(chunks)


def test_a_chunk_that_does_not_match_its_signature_stores_nothing(gate):
    creds = gate.assume("alice", "analysts")
    chunks = [b"x" * 65536, b"y" * 65536, b"z" * 10]
    status, headers, body = streaming_put(gate, creds, "sales/streamed-bad.bin", chunks, tamper_chunk=1)
    assert error_code(body) == "SignatureDoesNotMatch", body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        gate.client(creds).head_object(Bucket="lake", Key="sales/streamed-bad.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert gate.audited(headers["x-amz-request-id"])
