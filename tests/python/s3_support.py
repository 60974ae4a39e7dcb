"""Helpers for the S3 front's tests, on top of conftest's `Lakegate` server: vended credentials, SDK clients,
raw requests (sent byte for byte) and the audit events of one request."""

from __future__ import annotations

import http.client
import json
import subprocess
import time

import boto3
from botocore.config import Config

from conftest import BINARY

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::000000000000:role/lakegate"


class S3Gate:
    """The S3 side of a running `lakegate serve` (a conftest `Lakegate`)."""

    def __init__(self, server):
        self.server = server
        self.data = server.data_dir
        self.s3_port = server.s3_port
        self.endpoint = server.s3_url

    # --- identities -------------------------------------------------------------------------------------

    def token(self, sub: str, groups: str) -> str:
        return self.server.token(sub, [g for g in groups.split(",") if g])

    def token_file(self, sub: str, groups: str) -> str:
        path = self.data / f"{sub}.jwt"
        path.write_text(self.token(sub, groups) + "\n")
        return str(path)

    def assume(self, sub: str = "alice", groups: str = "analysts", role: str = ROLE_ARN, **extra) -> dict:
        sts = boto3.client("sts", endpoint_url=self.endpoint, region_name=REGION)
        r = sts.assume_role_with_web_identity(
            RoleArn=role, RoleSessionName=f"{sub}-test", WebIdentityToken=self.token(sub, groups), **extra
        )
        return r["Credentials"]

    def minted(self, sub: str, groups: str, ttl: str) -> dict:
        """Credentials minted directly from the server keys (to get a very short lifetime)."""
        out = subprocess.run(
            [str(BINARY), "credentials", "--data-dir", str(self.data), "--sub", sub, "--groups", groups, "--ttl", ttl],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)

    def client(self, creds: dict, service: str = "s3", **config):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=Config(signature_version="s3v4", retries={"max_attempts": 1}, **config),
        )

    # --- raw HTTP ---------------------------------------------------------------------------------------

    def raw(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        """Sends `path` byte for byte (no client-side normalisation); returns (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.s3_port, timeout=30)
        try:
            has_host = any(k.lower() == "host" for k in (headers or {}))
            conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    # --- audit ------------------------------------------------------------------------------------------

    def audited(self, request_id: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """The audit events of one request, waiting (bounded) until the writer has written `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.server.audit_events() if e.get("request_id") == request_id]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def error_code(xml: bytes) -> str | None:
    import re

    m = re.search(rb"<Code>([^<]*)</Code>", xml)
    return m.group(1).decode() if m else None


def arrow_fs(gate, creds):
    """pyarrow's own S3 filesystem on Lakegate's endpoint with STS credentials (as `gate.assume` returns them)."""
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(
        access_key=creds["AccessKeyId"],
        secret_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
        endpoint_override=gate.endpoint.removeprefix("http://"),
        scheme="http",
        region=REGION,
    )
