"""S3 conformance: an object-level subset of ceph's s3-tests, run directly against a store and through Lakegate
(in front of that same store, and on its embedded store), compared test by test.

Every s3-tests test that passes directly must pass through Lakegate, or be named in
`s3_conformance.EXPECTED_DIFFERENCES` with its reason (and in docs/s3.md, "Conformance"). The store is a moto
server without request signing enforced: moto's own signature check refuses some valid listings (see
test_s3_remote.py), and the direct run is the baseline of S3 behaviour, not of authentication.
"""

import os
import shutil
import subprocess
import sys

import boto3
import pytest

import s3_conformance as conformance
from conftest import REPO, Lakegate, eventually, free_port, wait_for_port
from s3_support import REGION, S3Gate

pytestmark = pytest.mark.skipif(conformance.suite_missing_reason() is not None,
                                reason=conformance.suite_missing_reason() or "")

# Two principals for the suite's main and alt accounts, in a group this policy lets do anything the S3 front
# offers on any bucket (the suite makes a bucket per test).
POLICY = """
@id("s3tests-everything")
@description("The s3-tests principals may use every object operation on every bucket.")
permit (
  principal in Group::"s3tests",
  action in [Action::"Read", Action::"Write", Action::"List", Action::"s3:HeadBucket", Action::"s3:GetBucketLocation"],
  resource
);
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
    moto = beside if os.path.exists(beside) else shutil.which("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        yield {"endpoint": endpoint, "buckets": {"kind": "s3", "endpoint": endpoint, "access_key": "AKIASTORE",
                                                 "secret_key": "store-secret"}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def principals(server, buckets):
    """STS credentials for the suite's main and alt accounts, once the policy that lets them in is loaded."""
    (server.policy_dir / "s3tests.cedar").write_text(POLICY)
    gate = S3Gate(server)
    main = gate.assume("s3tests-main", "s3tests")
    alt = gate.assume("s3tests-alt", "s3tests")
    probe = boto3.client("s3", endpoint_url=gate.endpoint, region_name=REGION,
                         aws_access_key_id=main["AccessKeyId"], aws_secret_access_key=main["SecretAccessKey"],
                         aws_session_token=main["SessionToken"])
    provisioner = conformance.provisioner(buckets)
    provisioner.create("s3tests-probe")

    def allowed():
        try:
            probe.put_object(Bucket="s3tests-probe", Key="probe", Body=b"")
            return True
        except probe.exceptions.ClientError:
            return False

    eventually("the s3-tests policy to be loaded", allowed)
    provisioner.remove("s3tests-probe")
    return main, alt


@pytest.fixture(scope="module")
def direct(store, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("s3tests-direct")
    # The store does not check signatures, so any keys do; the suite needs two accounts all the same.
    main = {"AccessKeyId": "AKIAS3TESTSMAIN", "SecretAccessKey": "main-secret"}
    alt = {"AccessKeyId": "AKIAS3TESTSALT", "SecretAccessKey": "alt-secret"}
    return workdir, conformance.run_suite(workdir, store["endpoint"], main, alt, store["buckets"])


@pytest.fixture(scope="module")
def through_remote(store, tmp_path_factory):
    config = f"""
[s3.backend]
kind = "remote"
endpoint = "{store['endpoint']}"
region = "{REGION}"
access_key_id = "AKIASTORE"
secret_access_key = "store-secret"
"""
    server = Lakegate(config=config)
    try:
        main, alt = principals(server, store["buckets"])
        workdir = tmp_path_factory.mktemp("s3tests-remote")
        yield workdir, conformance.run_suite(workdir, server.s3_url, main, alt, store["buckets"])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def through_embedded(tmp_path_factory):
    server = Lakegate()
    try:
        buckets = {"kind": "dir", "path": str(server.data_dir / "store")}
        main, alt = principals(server, buckets)
        workdir = tmp_path_factory.mktemp("s3tests-embedded")
        yield workdir, conformance.run_suite(workdir, server.s3_url, main, alt, buckets)
    finally:
        server.stop()


def unexplained(direct, through, run):
    """Regressions (passed directly, not through Lakegate, not expected) and stale expectations (expected to
    differ, but passed through Lakegate), with the failure message of each regression."""
    (_, base), (workdir, seen) = direct, through
    expected = conformance.EXPECTED_DIFFERENCES[run]
    regressions = {
        name: f"{seen.get(name, 'not run')}: {conformance.failure_text(workdir, name)}"
        for name, outcome in sorted(base.items())
        if outcome == "passed" and seen.get(name) != "passed" and name not in expected
    }
    stale = sorted(name for name in expected if seen.get(name) == "passed")
    return regressions, stale


def passes(run) -> str:
    """`passed/selected` of one run, for the report pytest prints with `-rA` (the figures docs/s3.md quotes)."""
    _, seen = run
    return f"{sum(o == 'passed' for o in seen.values())}/{len(seen)}"


def test_the_suite_ran_the_subset_directly_against_the_store(direct):
    _, base = direct
    passed = [n for n, o in base.items() if o == "passed"]
    # A baseline that passed nothing would make the comparison below vacuous.
    assert len(passed) >= 100, f"only {len(passed)} of {len(base)} s3-tests passed against the store itself"
    print(f"s3-tests directly on the store: {passes(direct)} passed")


def test_what_passes_on_the_store_passes_through_lakegate_in_front_of_it(direct, through_remote):
    regressions, stale = unexplained(direct, through_remote, "remote")
    print(f"s3-tests through Lakegate in front of the store: {passes(through_remote)} passed")
    assert not regressions, "fail through Lakegate (remote store), not expected:\n" + "\n".join(
        f"  {n}: {why}" for n, why in regressions.items())
    assert not stale, f"expected to differ but pass through Lakegate (remote): remove from the list: {stale}"


def test_what_passes_on_the_store_passes_through_lakegate_on_its_embedded_store(direct, through_embedded):
    regressions, stale = unexplained(direct, through_embedded, "embedded")
    print(f"s3-tests through Lakegate on the embedded store: {passes(through_embedded)} passed")
    assert not regressions, "fail through Lakegate (embedded store), not expected:\n" + "\n".join(
        f"  {n}: {why}" for n, why in regressions.items())
    assert not stale, f"expected to differ but pass through Lakegate (embedded): remove from the list: {stale}"


def test_every_expected_difference_is_documented_with_its_reason():
    guide = (REPO / "docs" / "s3.md").read_text()
    undocumented = sorted(
        name for run in conformance.EXPECTED_DIFFERENCES.values() for name in run if f"`{name}`" not in guide)
    assert not undocumented, f"docs/s3.md (Conformance) does not name: {undocumented}"
