"""Helpers for the S3 front's tests: a `lakegate serve` of its own per test module (the S3 tests change
configuration and policies), tokens, vended credentials, raw requests and the audit log.

The binary is `$LAKEGATE_BIN`, else `$CARGO_TARGET_DIR/debug/lakegate`, else `target/debug/lakegate`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import http.client

import boto3
from botocore.config import Config

REPO = pathlib.Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::000000000000:role/lakegate"


def binary() -> str:
    if os.environ.get("LAKEGATE_BIN"):
        return os.environ["LAKEGATE_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "lakegate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: pathlib.Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open:\n{log.read_text()}")


class Lakegate:
    """One running `lakegate serve` with a temporary data directory."""

    def __init__(self, config: str = "", env: dict[str, str] | None = None):
        self.tmp = tempfile.TemporaryDirectory(prefix="lakegate-s3-")
        self.data = pathlib.Path(self.tmp.name)
        self.s3_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        config_file = self.data / "lakegate.toml"
        config_file.write_text(config)
        self.log = self.data / "server.log"
        run_env = dict(os.environ)
        run_env.update(
            {
                "LAKEGATE__CONTROL__LISTEN": f"127.0.0.1:{free_port()}",
                "LAKEGATE__SQL__LISTEN": f"127.0.0.1:{free_port()}",
                "LAKEGATE__S3__LISTEN": f"127.0.0.1:{self.s3_port}",
                "LAKEGATE_LOG": "info",
            }
        )
        run_env.update(env or {})
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary(), "serve", "--config", str(config_file), "--data-dir", str(self.data)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=run_env,
            )
        wait_for_port(self.s3_port, self.proc, self.log)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.tmp.cleanup()

    # --- identities -------------------------------------------------------------------------------------

    def token(self, sub: str, groups: str) -> str:
        out = subprocess.run(
            [binary(), "token", "--data-dir", str(self.data), "--sub", sub, "--groups", groups],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

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
            [binary(), "credentials", "--data-dir", str(self.data), "--sub", sub, "--groups", groups, "--ttl", ttl],
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

    def audit_events(self) -> list[dict]:
        events = []
        for f in sorted((self.data / "audit").glob("*.jsonl")):
            for line in f.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    events.append(record.get("event", record))
        return events

    def audited(self, request_id: str, timeout: float = 10.0) -> list[dict]:
        """The audit events of one request, waiting for the writer."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.audit_events() if e.get("request_id") == request_id]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def error_code(xml: bytes) -> str | None:
    import re

    m = re.search(rb"<Code>([^<]*)</Code>", xml)
    return m.group(1).decode() if m else None
