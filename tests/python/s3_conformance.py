"""Runs an object-level subset of ceph's s3-tests against one S3 endpoint and reads back each test's outcome.

test_s3_conformance.py runs it directly against a store and through Lakegate, and compares. The suite is not
vendored: CI and developers have it at `../shared/conformance/s3-tests` beside the repository (read-only, so it
is copied to a temp dir before each run). s3tests_plugin.py adapts it to session credentials and provisioned
buckets; see there why.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import boto3

REPO = pathlib.Path(__file__).resolve().parents[2]
SUITE = REPO.parent / "shared" / "conformance" / "s3-tests"
HERE = pathlib.Path(__file__).resolve().parent

# The subset: object-level operations Lakegate forwards (s3tests/functional/test_s3.py, by test name). Bucket
# administration Lakegate does not offer (create/delete bucket, ACLs, versioning, lifecycle, website, bucket
# policy, tagging, encryption, object lock, logging, CORS, ownership, checksums, S3 Select, rgw extensions) is
# left out by `EXCLUDE`, as are tests that need anonymous access or accounts beyond main and alt.
INCLUDE = [
    # object put/get/head/delete, metadata, response-header overrides, presigned URLs
    r"test_object_(head_zero_bytes|write_.*|read_not_exist|requestid_matches_header_on_error)",
    r"test_object_(set_get_.*|metadata_replaced_on_put|raw_get_x_amz_expires_.*|raw_response_headers)",
    r"test_object_(raw_put_authenticated_expired|put_authenticated|content_encoding_aws_chunked)",
    # every form of range
    r"test_ranged_.*",
    # conditional requests: GET/HEAD, PUT, copy
    r"test_get_object_if.*",
    r"test_put_object_if(match|nonmatch)_.*",
    r"test_copy_object_if.*",
    # listings v1/v2: prefix, delimiter, max-keys, markers, continuation, unicode keys, encoding-type
    r"test_bucket_list(v2)?_(empty|distinct|many|delimiter_.*|prefix_.*|maxkeys_.*|marker_.*|startafter_.*)",
    r"test_bucket_list(v2)?_(continuationtoken.*|both_continuationtoken_startafter|encoding_basic|fetchowner_.*)",
    r"test_bucket_list(v2)?_(special_prefix|long_name|return_data)",
    r"test_basic_key_count",
    # multi-object delete
    r"test_multi_object(v2)?_delete(_key_limit)?",
    # copy
    r"test_object_copy_.*",
    # multipart
    r"test_multipart_(upload.*|copy_.*|get_part|single_get_part|resend_first_finishes_last)",
    r"test_non_multipart_get_part",
    r"test_(abort_multipart_upload.*|list_multipart_upload.*|upload_part_copy_percent_encoded_key)",
    r"test_atomic_.*",
    # Not POST Object (browser form upload): s3-tests signs its forms with Signature Version 2, which Lakegate
    # refuses on purpose, and the store (moto) answers them 500; test_s3_post_object.py covers SigV4 forms.
    # keys with every legal character (test_bucket_create_special_key_names also sets ACLs: excluded below)
    r"test_bucket_create_special_key_names",
]
EXCLUDE = [
    r".*_(acl|acls|grant|versioned|versioning|tags?|tagging|sse_.*|encrypt.*|lock.*|cksum.*|checksum.*)(_.*)?",
    r".*_anonymous.*",
    r".*_bucket_gone",
    r".*_tenant",
    r"test_object_copy_not_owned_.*",
    r"test_bucket_list(v2)?_unordered",
    r"test_multipart_(put_|use_cksum).*",
    # Bucket administration inside an object test: creates its bucket itself, or sets or reads ACLs or a policy.
    r"test_basic_key_count|test_bucket_create_special_key_names|test_bucket_list_return_data",
    r"test_multipart_upload_on_a_bucket_with_policy",
    # Slow (a thousand objects or a 5 MiB part resent many times, 10 s or more each); their behaviour is
    # covered by the smaller tests of the same operations.
    r"test_multi_object(v2)?_delete_key_limit",
    r"test_bucket_list_delimiter_not_skip_special",
    r"test_multipart_upload_resend_part",
]

# Tests that pass directly against the store and are expected to differ through Lakegate, each with its reason.
# docs/s3.md ("Conformance") lists the same names with the same reasons; the test checks that it does.
_REFUSED_PREFIXES = {
    "test_bucket_list_prefix_unreadable": "a listing prefix with a control character (`\\x0a`) is refused "
    "(403 AccessDenied), as keys with control characters are, on purpose",
    "test_bucket_listv2_prefix_unreadable": "the same, ListObjectsV2",
    "test_bucket_list_prefix_delimiter_prefix_not_exist": "a listing prefix `/` (leading slash) is refused "
    "(403 AccessDenied) on purpose: it would be a path step to a store that decoded twice",
    "test_bucket_listv2_prefix_delimiter_prefix_not_exist": "the same, ListObjectsV2",
}
EXPECTED_DIFFERENCES = {
    "remote": dict(_REFUSED_PREFIXES),
    "embedded": dict(_REFUSED_PREFIXES),
}


def suite_missing_reason() -> str | None:
    if not (SUITE / "s3tests" / "functional" / "test_s3.py").is_file():
        return (
            f"ceph's s3-tests is not at {SUITE} (../shared/conformance/s3-tests beside the repository): "
            "the S3 conformance comparison needs it"
        )
    return None


def run_suite(workdir: pathlib.Path, endpoint: str, main: dict, alt: dict, buckets: dict) -> dict[str, str]:
    """Runs the subset against `endpoint` as `main` and `alt` (`AccessKeyId`, `SecretAccessKey` and, for STS
    credentials, `SessionToken`); returns {test name: "passed" | "failed" | "error" | "skipped"}."""
    workdir.mkdir(parents=True, exist_ok=True)
    suite = workdir / "s3-tests"
    if not suite.exists():
        shutil.copytree(SUITE, suite, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache"))
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    conf = workdir / "s3tests.conf"
    conf.write_text(_config(host, port, main, alt))
    tokens = {c["AccessKeyId"]: c["SessionToken"] for c in (main, alt) if c.get("SessionToken")}
    target = workdir / "target.json"
    target.write_text(
        json.dumps({"session_tokens": tokens, "buckets": buckets, "include": INCLUDE, "exclude": EXCLUDE})
    )
    junit = workdir / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        S3TEST_CONF=str(conf),
        LAKEGATE_S3TESTS_TARGET=str(target),
        PYTHONPATH=str(HERE),
        PYTHONDONTWRITEBYTECODE="1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    args = [sys.executable, "-m", "pytest", "s3tests/functional/test_s3.py", "-p", "s3tests_plugin"]
    args += ["-p", "no:cacheprovider", "-q", "--junitxml", str(junit), "-o", "junit_family=xunit1"]
    with open(workdir / "pytest.log", "wb") as log:
        subprocess.run(args, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    if not junit.exists():
        tail = (workdir / "pytest.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"s3-tests wrote no report against {endpoint}; its output ends:\n{tail}")
    return outcomes(junit)


def outcomes(junit: pathlib.Path) -> dict[str, str]:
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        results[case.get("name")] = outcome
    return results


def failure_text(workdir: pathlib.Path, name: str) -> str:
    """The first lines of a test's failure message in a run's junit report (for the assertion message)."""
    for case in ET.parse(workdir / "junit.xml").getroot().iter("testcase"):
        if case.get("name") == name:
            for child in case:
                if child.tag in ("failure", "error"):
                    return (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
    return ""


def _config(host: str, port: str, main: dict, alt: dict) -> str:
    def account(name, creds, user_id):
        return textwrap.dedent(f"""
            [s3 {name}]
            display_name = s3tests-{name}
            user_id = {user_id}
            email = s3tests-{name}@example.com
            api_name =
            access_key = {creds['AccessKeyId']}
            secret_key = {creds['SecretAccessKey']}
            """)

    # tenant and the iam accounts are required by the suite's config loader; no selected test uses them.
    unused = "\n".join(
        f"[{section}]\naccess_key = UNUSED{n}\nsecret_key = unused\nuser_id = unused{n}\nemail = unused@example.com\n"
        f"display_name = unused\ntenant = unused\n"
        for n, section in enumerate(["s3 tenant", "iam", "iam root", "iam alt root"])
    )
    return (
        f"[DEFAULT]\nhost = {host}\nport = {port}\nis_secure = False\nssl_verify = False\n\n"
        "[fixtures]\nbucket prefix = s3tests-{random}-\n"
        + account("main", main, "s3tests-main")
        + account("alt", alt, "s3tests-alt")
        + "\n"
        + unused
    )


def provisioner(spec: dict):
    """Creates and removes buckets out of band, as the store's operator would (Lakegate does neither)."""
    return {"s3": S3Provisioner, "dir": DirProvisioner}[spec["kind"]](spec)


class S3Provisioner:
    """The store's own S3 API with the store's key (never through Lakegate)."""

    def __init__(self, spec):
        self.client = boto3.client(
            "s3",
            endpoint_url=spec["endpoint"],
            region_name="us-east-1",
            aws_access_key_id=spec["access_key"],
            aws_secret_access_key=spec["secret_key"],
        )

    def create(self, name):
        self.client.create_bucket(Bucket=name)

    def remove(self, name):
        c = self.client
        try:
            for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for u in page.get("Uploads", []):
                    c.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
            for page in c.get_paginator("list_objects").paginate(Bucket=name):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    c.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            c.delete_bucket(Bucket=name)
        except c.exceptions.NoSuchBucket:
            pass


class DirProvisioner:
    """The embedded store: a bucket is a directory under the store root (and holds its own key index)."""

    def __init__(self, spec):
        self.root = pathlib.Path(spec["path"])

    def create(self, name):
        (self.root / name).mkdir(exist_ok=True)

    def remove(self, name):
        shutil.rmtree(self.root / name, ignore_errors=True)
