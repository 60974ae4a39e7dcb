"""The S3 front with real clients: boto3, the AWS CLI, curl and pyarrow, credentials from Lakegate's own STS,
against the embedded store and the demo policies."""

import os
import shutil
import subprocess
import sys

import boto3
import botocore
import pytest
from botocore.config import Config

from s3_support import REGION, ROLE_ARN, S3Gate, error_code


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


@pytest.fixture(scope="module")
def alice(gate):
    return gate.client(gate.assume("alice", "analysts"))


def code_of(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_alice_puts_gets_lists_and_deletes_in_sales(alice):
    alice.put_object(Bucket="lake", Key="sales/t1.txt", Body=b"hello sales")
    assert alice.get_object(Bucket="lake", Key="sales/t1.txt")["Body"].read() == b"hello sales"
    keys = [o["Key"] for o in alice.list_objects_v2(Bucket="lake", Prefix="sales/")["Contents"]]
    assert "sales/t1.txt" in keys
    alice.delete_object(Bucket="lake", Key="sales/t1.txt")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.head_object(Bucket="lake", Key="sales/t1.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_list_buckets_shows_only_buckets_the_caller_can_see_into(gate, alice):
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["lake"]
    # A role limited to another bucket sees none.
    nobody = gate.client(gate.minted("mallory", "", "10m"))
    assert "lake" in [b["Name"] for b in nobody.list_buckets()["Buckets"]]  # public/ is listable by anyone


def test_a_20_mib_multipart_upload_round_trips(alice, tmp_path):
    data = os.urandom(20 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    alice.upload_file(str(src), "lake", "sales/big.bin", Config=config)
    head = alice.head_object(Bucket="lake", Key="sales/big.bin")
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"], "a multipart ETag"
    assert alice.get_object(Bucket="lake", Key="sales/big.bin")["Body"].read() == data


def test_a_range_get_returns_exactly_the_requested_bytes(alice):
    alice.put_object(Bucket="lake", Key="sales/range.txt", Body=b"0123456789abcdef")
    r = alice.get_object(Bucket="lake", Key="sales/range.txt", Range="bytes=4-9")
    assert r["Body"].read() == b"456789"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206


def test_a_served_get_is_audited_complete_with_its_status_and_bytes(gate, alice):
    alice.put_object(Bucket="lake", Key="sales/audited.txt", Body=b"0123456789")
    r = alice.get_object(Bucket="lake", Key="sales/audited.txt", Range="bytes=2-4")
    assert r["Body"].read() == b"234"
    [event] = gate.audited(r["ResponseMetadata"]["RequestId"])
    assert (event["action"], event["decision"]) == ("s3:GetObject", "allow")
    assert event["outcome"]["status"] == 206
    assert event["outcome"]["bytes_out"] == 3
    assert event["outcome"]["incomplete"] is False
    assert event["extra"]["role_session_name"] == "alice-test"


def test_a_presigned_get_works_with_curl(alice):
    alice.put_object(Bucket="lake", Key="sales/presigned.txt", Body=b"via curl")
    url = alice.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "sales/presigned.txt"}, ExpiresIn=300)
    out = subprocess.run(["curl", "-sS", "-f", url], capture_output=True, check=True)
    assert out.stdout == b"via curl"


def test_delete_objects_deletes_allowed_keys_and_refuses_the_forbidden_one(gate, alice):
    alice.put_object(Bucket="lake", Key="sales/d1.txt", Body=b"1")
    alice.put_object(Bucket="lake", Key="sales/d2.txt", Body=b"2")
    r = alice.delete_objects(
        Bucket="lake",
        Delete={"Objects": [{"Key": "sales/d1.txt"}, {"Key": "hr/salaries.csv"}, {"Key": "sales/d2.txt"}]},
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["sales/d1.txt", "sales/d2.txt"]
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("hr/salaries.csv", "AccessDenied")]
    # Each key was decided and audited on its own.
    events = gate.audited(r["ResponseMetadata"]["RequestId"], count=3)
    decisions = sorted((e["resource"], e["decision"]) for e in events)
    assert decisions == [
        ("s3://lake/hr/salaries.csv", "deny"),
        ("s3://lake/sales/d1.txt", "allow"),
        ("s3://lake/sales/d2.txt", "allow"),
    ]
    # The HR object is still there for HR.
    hr = gate.client(gate.assume("henry", "hr"))
    assert hr.get_object(Bucket="lake", Key="hr/salaries.csv")["Body"].read()


def test_hr_prefix_is_access_denied_with_the_s3_xml_error(gate, alice):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_object(Bucket="lake", Key="hr/salaries.csv")
    assert code_of(e) == "AccessDenied"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.put_object(Bucket="lake", Key="hr/new.txt", Body=b"x")
    assert code_of(e) == "AccessDenied"
    # The raw answer is S3's XML error, with our request id.
    status, headers, body = gate.raw("GET", "/lake/hr/salaries.csv", {"Authorization": f"Bearer {gate.token('alice', 'analysts')}"})
    assert status == 403
    assert error_code(body) == "AccessDenied"
    assert f"<RequestId>{headers['x-amz-request-id']}</RequestId>".encode() in body


def test_copy_needs_read_on_the_source_and_write_on_the_destination(alice):
    alice.copy_object(Bucket="lake", Key="sales/copied.csv", CopySource={"Bucket": "lake", "Key": "public/cities.csv"})
    assert b"Lisbon" in alice.get_object(Bucket="lake", Key="sales/copied.csv")["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.copy_object(Bucket="lake", Key="sales/stolen.csv", CopySource={"Bucket": "lake", "Key": "hr/salaries.csv"})
    assert code_of(e) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.copy_object(Bucket="lake", Key="hr/planted.csv", CopySource={"Bucket": "lake", "Key": "public/cities.csv"})
    assert code_of(e) == "AccessDenied"


def test_unsupported_operations_are_refused_not_passed_through(alice):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_bucket_acl(Bucket="lake")
    assert code_of(e) == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.put_bucket_policy(Bucket="lake", Policy="{}")
    assert code_of(e) == "NotImplemented"


def test_the_readonly_role_narrows_what_policy_allows(gate):
    ro = gate.client(gate.assume("alice", "analysts", role="arn:aws:iam::000000000000:role/lakegate-readonly"))
    assert ro.get_object(Bucket="lake", Key="sales/2024/q1.csv")["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ro.put_object(Bucket="lake", Key="sales/ro.txt", Body=b"x")
    assert code_of(e) == "AccessDenied"


def test_get_caller_identity_names_the_session(gate):
    creds = gate.assume("alice", "analysts")
    arn = gate.client(creds, "sts").get_caller_identity()["Arn"]
    assert arn == "arn:aws:sts::000000000000:assumed-role/lakegate/alice-test"


def s3control(gate, creds):
    ctl = gate.client(creds, "s3control")

    def strip_account_prefix(request, **_):
        # botocore prefixes the account id to the host, which cannot resolve for a loopback endpoint.
        request.url = request.url.replace("//000000000000.", "//", 1)

    ctl.meta.events.register("before-sign.s3-control.GetDataAccess", strip_account_prefix)
    return ctl


def test_get_data_access_read_on_sales_vends_credentials_that_cannot_put(gate):
    ctl = s3control(gate, gate.assume("alice", "analysts"))
    r = ctl.get_data_access(AccountId="000000000000", Target="s3://lake/sales/*", Permission="READ")
    assert r["MatchedGrantTarget"] == "s3://lake/sales/*"
    granted = gate.client(r["Credentials"])
    assert granted.get_object(Bucket="lake", Key="sales/2024/q1.csv")["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        granted.put_object(Bucket="lake", Key="sales/by-grant.txt", Body=b"x")
    assert code_of(e) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        granted.get_object(Bucket="lake", Key="public/cities.csv")
    assert code_of(e) == "AccessDenied", "the grant's scope is lake/sales/ only"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ctl.get_data_access(AccountId="000000000000", Target="s3://lake/hr/*", Permission="READ")
    assert code_of(e) == "AccessDenied"


def test_awscli_cp_ls_sync_with_web_identity_environment(gate, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": gate.endpoint,
            "AWS_REGION": REGION,
            "AWS_WEB_IDENTITY_TOKEN_FILE": gate.token_file("alice", "analysts"),
            "AWS_ROLE_ARN": ROLE_ARN,
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
    )

    # The CLI installed beside this Python (the test venv), else the one on PATH.
    beside = os.path.join(os.path.dirname(sys.executable), "aws")
    cli = beside if os.path.exists(beside) else shutil.which("aws")
    assert cli, "the AWS CLI is not installed (tests/python/requirements.txt)"

    def aws(*args, check=True):
        return subprocess.run([cli, *args], env=env, capture_output=True, text=True, check=check)

    (tmp_path / "x.txt").write_text("hi\n")
    aws("s3", "cp", "--only-show-errors", str(tmp_path / "x.txt"), "s3://lake/sales/cli/x.txt")
    assert "x.txt" in aws("s3", "ls", "s3://lake/sales/cli/").stdout
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("a.txt", "b.txt"):
        (tree / name).write_text(name)
    aws("s3", "sync", "--only-show-errors", str(tree), "s3://lake/sales/cli/tree/")
    listing = aws("s3", "ls", "s3://lake/sales/cli/tree/").stdout
    assert "a.txt" in listing and "b.txt" in listing
    refused = aws("s3", "cp", "--only-show-errors", str(tmp_path / "x.txt"), "s3://lake/hr/x.txt", check=False)
    assert refused.returncode != 0
    assert "AccessDenied" in refused.stderr


def test_pyarrow_reads_the_public_parquet_file_as_alice(gate):
    import pyarrow as pa
    import pyarrow.fs as fs_mod
    import pyarrow.parquet as pq

    creds = gate.assume("alice", "analysts")
    fs = fs_mod.S3FileSystem(
        access_key=creds["AccessKeyId"],
        secret_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
        endpoint_override=gate.endpoint.removeprefix("http://"),
        scheme="http",
        region=REGION,
    )
    table = pq.read_table("lake/public/cities.parquet", filesystem=fs)
    assert table.schema.names == ["city", "country", "population", "area_km2", "capital"]
    assert [table.schema.field(n).type for n in ("population", "area_km2", "capital")] == [
        pa.int64(),
        pa.float64(),
        pa.bool_(),
    ]
    assert table.to_pylist() == [
        {"city": "Lisbon", "country": "PT", "population": 545923, "area_km2": 100.05, "capital": True},
        {"city": "Oslo", "country": "NO", "population": 709037, "area_km2": 454.0, "capital": True},
        {"city": "Kyoto", "country": "JP", "population": 1463723, "area_km2": 827.83, "capital": False},
        {"city": "Quito", "country": "EC", "population": 2011388, "area_km2": 372.39, "capital": True},
    ]
    with pytest.raises(OSError):
        fs.open_input_stream("lake/hr/salaries.csv").read()
