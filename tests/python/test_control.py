"""The decision API as a user calls it: curl with a dev token, as in the README."""

import json
import subprocess

from conftest import BINARY, demo_token, eventually


def curl_authorize(lg, token, action, resource):
    out = subprocess.run(
        ["curl", "-s", "-H", f"Authorization: Bearer {token}", "-H", "content-type: application/json",
         "-d", json.dumps({"action": action, "resource": resource}), f"{lg.control_url}/v1/authorize"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_alice_may_read_sales_but_not_hr(lakegate):
    token = demo_token(lakegate, "alice")
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/sales/2024/q1.parquet")["decision"] == "allow"
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/hr/salaries.csv")["decision"] == "deny"


def test_carol_may_read_hr_but_not_sales(lakegate):
    token = demo_token(lakegate, "carol")
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/hr/salaries.csv")["decision"] == "allow"
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/sales/x")["decision"] == "deny"


def test_dave_reads_only_public(lakegate):
    token = demo_token(lakegate, "dave")
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/public/readme.txt")["decision"] == "allow"
    assert curl_authorize(lakegate, token, "s3:GetObject", "s3://lake/sales/x")["decision"] == "deny"


def test_the_audit_chain_of_a_live_server_verifies(lakegate):
    token = demo_token(lakegate, "bob")
    decision = curl_authorize(lakegate, token, "s3:ListBucket", "s3://lake/sales/")
    eventually("the event on disk", lambda: any(e["request_id"] == decision["request_id"] for e in lakegate.audit_events()))
    files = sorted(str(p) for p in (lakegate.data_dir / "audit").glob("audit-*.jsonl"))
    result = subprocess.run([str(BINARY), "audit", "verify", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
