"""The `lakegate-sidecar` binary as a Spark pod runs it, driven by the clients a user would point at it: the AWS CLI and boto3
with static dummy keys, path style, endpoint override. The central Lakegate decides and audits.

The last test is the whole chain with an independent OpenID provider: the provider's token for alice, exchanged
by a notebook service, written to the pod's token file, used through the sidecar."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import SIDECAR_BINARY, START_ATTEMPTS, demo_token, eventually, free_port, wait_until_running
from test_oidc_provider import exchange, lakegate_with_provider, provider  # noqa: F401 (fixtures)


class Sidecar:
    def __init__(self, upstream, token_file, *extra):
        self.dir = tempfile.mkdtemp(prefix="lakegate-sidecar-")
        log = pathlib.Path(self.dir) / "sidecar.log"
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with open(log, "wb") as out:
                self.process = subprocess.Popen(
                    [str(SIDECAR_BINARY), "--token-file", str(token_file), "--upstream", upstream,
                     "--listen", f"127.0.0.1:{self.port}", "--session-name", "spark-driver", *extra],
                    env={**os.environ, "LAKEGATE_LOG": "warn"}, stdout=out, stderr=subprocess.STDOUT)
            if wait_until_running(self.process, log):
                return
        raise RuntimeError(f"lakegate-sidecar exited before it was running, {START_ATTEMPTS} times")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start_sidecar():
    started = []

    def start(upstream, token_file, *extra):
        s = Sidecar(upstream, token_file, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def aws_cli(tmp_path):
    """Runs the AWS CLI the way the issue's acceptance does: dummy keys in the environment, nothing else."""
    beside = os.path.join(os.path.dirname(sys.executable), "aws")
    cli = beside if os.path.exists(beside) else shutil.which("aws")
    assert cli, "the AWS CLI is not installed (tests/python/requirements.txt)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})

    def aws(*args, check=True):
        return subprocess.run([cli, *args], env=env, capture_output=True, text=True, check=check, timeout=120)

    return aws


def token_file(tmp_path, token, name="token.jwt"):
    path = tmp_path / name
    path.write_text(token)
    return path


def test_awscli_lists_allowed_prefixes_through_the_sidecar_and_is_denied_elsewhere(lakegate, start_sidecar, tmp_path):
    sidecar = start_sidecar(lakegate.s3_url, token_file(tmp_path, demo_token(lakegate, "alice")))
    aws = aws_cli(tmp_path)
    (tmp_path / "orders.csv").write_text("id,amount\n1,10\n")
    aws("--endpoint-url", sidecar.url, "s3", "cp", "--only-show-errors", str(tmp_path / "orders.csv"),
        "s3://lake/sales/sidecar/orders.csv")

    listing = aws("--endpoint-url", sidecar.url, "s3", "ls", "s3://lake/sales/")
    assert "sidecar/" in listing.stdout

    refused = aws("--endpoint-url", sidecar.url, "s3", "ls", "s3://lake/hr/", check=False)
    assert refused.returncode != 0
    assert "AccessDenied" in refused.stderr


def test_boto3_multipart_upload_and_download_stream_through_the_sidecar(lakegate, start_sidecar, tmp_path):
    sidecar = start_sidecar(lakegate.s3_url, token_file(tmp_path, demo_token(lakegate, "alice")))
    s3 = boto3.client("s3", endpoint_url=sidecar.url, region_name="us-east-1", aws_access_key_id="x",
                      aws_secret_access_key="x",
                      config=botocore.config.Config(s3={"addressing_style": "path"}))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024 + 5))
    s3.upload_file(str(source), "lake", "sales/sidecar/big.bin")  # multipart above 8 MiB
    back = tmp_path / "back.bin"
    s3.download_file("lake", "sales/sidecar/big.bin", str(back))
    assert back.read_bytes() == source.read_bytes()
    ranged = s3.get_object(Bucket="lake", Key="sales/sidecar/big.bin", Range="bytes=10-19")["Body"].read()
    assert ranged == source.read_bytes()[10:20]

    # Refused from its head, a large upload hears the refusal, not a broken connection.
    for body in (b"x", os.urandom(24 * 1024 * 1024)):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            s3.put_object(Bucket="lake", Key="hr/planted.txt", Body=body)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_a_real_providers_token_exchanged_by_a_notebook_works_through_the_sidecar_and_the_audit_names_both(
        provider, lakegate_with_provider, start_sidecar, tmp_path):  # noqa: F811 (fixtures)
    lg = lakegate_with_provider
    exchanged = exchange(lg, provider.token("alice"))
    sidecar = start_sidecar(lg.s3_url, token_file(tmp_path, exchanged))
    aws = aws_cli(tmp_path)

    aws("--endpoint-url", sidecar.url, "s3", "ls", "s3://lake/sales/")
    refused = aws("--endpoint-url", sidecar.url, "s3", "ls", "s3://lake/hr/", check=False)
    assert "AccessDenied" in refused.stderr

    def listing(decision):
        return next((e for e in lg.audit_events()
                     if e["action"] == "s3:ListBucket" and e["decision"] == decision), None)

    for decision in ("allow", "deny"):
        event = eventually(f"the {decision} listing in the audit log", lambda: listing(decision))
        assert event["principal"]["subject"] == "alice"
        assert event["principal"]["issuer"] == provider.issuer, "the user's own issuer, not Lakegate's"
        assert [a["subject"] for a in event["actors"]] == ["notebook"]
        assert event["extra"]["role_session_name"] == "spark-driver"
