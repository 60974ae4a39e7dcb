"""Prometheus metrics of the S3 front, read from the control endpoint's /metrics."""

import re
import urllib.request

import botocore
import pytest

from conftest import eventually
from s3_support import S3Gate


def metric(lg, name, **labels):
    """The value of one sample of `name` with exactly these labels (0 when absent)."""
    text = urllib.request.urlopen(f"{lg.control_url}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{([^}}]*)\}} (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return 0.0


def test_a_get_and_a_denied_get_are_counted_with_latency_and_bytes(start_lakegate):
    lg = start_lakegate()
    gate = S3Gate(lg)
    alice = gate.client(gate.assume("alice", "analysts"))
    body = alice.get_object(Bucket="lake", Key="sales/2024/q1.csv")["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError):
        alice.get_object(Bucket="lake", Key="hr/salaries.csv")

    allowed = dict(operation="GetObject", decision="allow", status="2xx")
    denied = dict(operation="GetObject", decision="deny", status="4xx")
    eventually("both GETs counted", lambda: metric(lg, "lakegate_s3_requests_total", **allowed) == 1
               and metric(lg, "lakegate_s3_requests_total", **denied) == 1)
    assert metric(lg, "lakegate_s3_request_seconds_count", operation="GetObject") == 2
    assert metric(lg, "lakegate_s3_request_seconds_bucket", operation="GetObject", le="+Inf") == 2
    assert metric(lg, "lakegate_s3_bytes_total", direction="out") >= len(body)
    assert metric(lg, "lakegate_s3_requests_total", operation="STS", decision="allow", status="2xx") == 1
