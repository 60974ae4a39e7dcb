"""The S3 front with real clients: boto3, the AWS CLI, curl, pyarrow and polars, credentials from Lakegate's own
STS, against the embedded store and the demo policies."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys

import boto3
import botocore
import pytest
from botocore.config import Config

from s3_support import REGION, ROLE_ARN, S3Gate, arrow_fs, error_code


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


def test_a_put_whose_body_is_not_its_content_md5_is_bad_digest_and_changes_nothing(gate, alice):
    alice.put_object(Bucket="lake", Key="sales/digest.txt", Body=b"kept", ContentType="text/plain")
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.put_object(Bucket="lake", Key="sales/digest.txt", Body=b"replaced?", ContentMD5=wrong)
    assert code_of(e) == "BadDigest"
    got = alice.get_object(Bucket="lake", Key="sales/digest.txt")
    assert got["Body"].read() == b"kept"
    assert got["ETag"] == '"%s"' % hashlib.md5(b"kept").hexdigest()
    assert got["ContentType"] == "text/plain"
    [event] = gate.audited(e.value.response["ResponseMetadata"]["RequestId"])
    assert (event["action"], event["outcome"]["status"]) == ("s3:PutObject", 400)


def test_a_part_whose_body_is_not_its_content_md5_is_bad_digest_and_not_kept(alice):
    upload = alice.create_multipart_upload(Bucket="lake", Key="sales/digest-mp.bin")["UploadId"]
    part = dict(Bucket="lake", Key="sales/digest-mp.bin", UploadId=upload, PartNumber=1, Body=b"part one")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.upload_part(**part, ContentMD5=base64.b64encode(hashlib.md5(b"part two").digest()).decode())
    assert code_of(e) == "BadDigest"
    assert "Parts" not in alice.list_parts(Bucket="lake", Key="sales/digest-mp.bin", UploadId=upload)
    e_tag = alice.upload_part(**part, ContentMD5=base64.b64encode(hashlib.md5(b"part one").digest()).decode())["ETag"]
    alice.complete_multipart_upload(
        Bucket="lake",
        Key="sales/digest-mp.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e_tag}]},
    )
    assert alice.get_object(Bucket="lake", Key="sales/digest-mp.bin")["Body"].read() == b"part one"


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


def aws_cli(gate, tmp_path, config: str | None = None):
    """`aws ...` as alice with her web identity token, with no configuration but `config` (a config file's text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    config_file = tmp_path / "aws-config"
    if config is not None:
        config_file.write_text(config)
    env.update(
        {
            "AWS_ENDPOINT_URL": gate.endpoint,
            "AWS_REGION": REGION,
            "AWS_WEB_IDENTITY_TOKEN_FILE": gate.token_file("alice", "analysts"),
            "AWS_ROLE_ARN": ROLE_ARN,
            "AWS_CONFIG_FILE": str(config_file if config is not None else tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
    )

    # The CLI installed beside this Python (the test venv), else the one on PATH.
    beside = os.path.join(os.path.dirname(sys.executable), "aws")
    cli = beside if os.path.exists(beside) else shutil.which("aws")
    assert cli, "the AWS CLI is not installed (tests/python/requirements.txt)"

    def aws(*args, check=True):
        return subprocess.run([cli, *args], env=env, capture_output=True, text=True, check=check)

    return aws


def test_awscli_cp_ls_sync_with_web_identity_environment(gate, tmp_path):
    aws = aws_cli(gate, tmp_path)

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
    import pyarrow.parquet as pq

    creds = gate.assume("alice", "analysts")
    fs = arrow_fs(gate, creds)
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


# --- ranges ---------------------------------------------------------------------------------------------------

TEN = b"0123456789"


@pytest.mark.parametrize(
    "range_,status,content_range,body_or_code",
    [
        ("bytes=2-5", 206, "bytes 2-5/10", b"2345"),
        ("bytes=2-", 206, "bytes 2-9/10", b"23456789"),
        ("bytes=8-100", 206, "bytes 8-9/10", b"89"),
        ("bytes=0-", 206, "bytes 0-9/10", TEN),
        ("bytes=-3", 206, "bytes 7-9/10", b"789"),
        ("bytes=-10", 206, "bytes 0-9/10", TEN),
        # A suffix longer than the object is all of it: object_store readers (polars) open Parquet files so.
        ("bytes=-65536", 206, "bytes 0-9/10", TEN),
        ("bytes=10-", 416, None, "InvalidRange"),
        ("bytes=10-20", 416, None, "InvalidRange"),
        ("bytes=-0", 416, None, "InvalidRange"),
        # What is not one byte range is ignored, as S3 ignores it: the whole object, 200.
        ("bytes=0-1,4-5", 200, None, TEN),
        ("bytes=5-2", 200, None, TEN),
        ("chars=1-2", 200, None, TEN),
    ],
)
def test_every_range_form_is_answered_as_s3_answers_it(alice, range_, status, content_range, body_or_code):
    alice.put_object(Bucket="lake", Key="sales/ten.bin", Body=TEN)
    if status == 416:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            alice.get_object(Bucket="lake", Key="sales/ten.bin", Range=range_)
        assert (e.value.response["ResponseMetadata"]["HTTPStatusCode"], code_of(e)) == (416, body_or_code)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            alice.head_object(Bucket="lake", Key="sales/ten.bin", Range=range_)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416, "a HEAD answer has no body to name it"
        return
    got = alice.get_object(Bucket="lake", Key="sales/ten.bin", Range=range_)
    assert (got["ResponseMetadata"]["HTTPStatusCode"], got.get("ContentRange")) == (status, content_range)
    assert got["Body"].read() == body_or_code
    # HEAD answers as the GET would, without the body.
    head = alice.head_object(Bucket="lake", Key="sales/ten.bin", Range=range_)
    assert (head["ResponseMetadata"]["HTTPStatusCode"], head.get("ContentRange")) == (status, content_range)
    assert head["ContentLength"] == len(body_or_code)


@pytest.mark.parametrize("range_", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-65536"])
def test_no_range_of_an_empty_object_is_satisfiable(alice, range_):
    alice.put_object(Bucket="lake", Key="sales/empty.bin", Body=b"")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_object(Bucket="lake", Key="sales/empty.bin", Range=range_)
    assert (e.value.response["ResponseMetadata"]["HTTPStatusCode"], code_of(e)) == (416, "InvalidRange")
    assert alice.get_object(Bucket="lake", Key="sales/empty.bin")["Body"].read() == b""


# --- polars (the Rust object_store crate) ------------------------------------------------------------------------


def polars_options(gate, creds):
    return {
        "aws_endpoint_url": gate.endpoint,
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
        "aws_region": REGION,
        "aws_allow_http": "true",
    }


def test_polars_reads_the_small_public_parquet_file_as_alice(gate):
    import polars as pl

    # The file is smaller than the suffix object_store asks for first.
    table = pl.read_parquet("s3://lake/public/cities.parquet", storage_options=polars_options(gate, gate.assume()))
    assert table.columns == ["city", "country", "population", "area_km2", "capital"]
    assert table["population"].to_list() == [545923, 709037, 1463723, 2011388]


def test_polars_writes_and_scans_parquet_in_sales_and_is_refused_in_hr(gate):
    import polars as pl

    options = polars_options(gate, gate.assume())
    pl.DataFrame({"region": ["EU", "US"], "amount": [1200, 3400]}).write_parquet(
        "s3://lake/sales/polars/q2.parquet", storage_options=options
    )
    scanned = pl.scan_parquet("s3://lake/sales/polars/*.parquet", storage_options=options).collect()
    assert scanned.sort("region").to_dicts() == [{"region": "EU", "amount": 1200}, {"region": "US", "amount": 3400}]
    with pytest.raises(PermissionError, match="AccessDenied"):
        pl.DataFrame({"x": [1]}).write_parquet("s3://lake/hr/polars.parquet", storage_options=options)
    with pytest.raises(PermissionError, match="AccessDenied"):
        pl.read_parquet("s3://lake/hr/salaries.parquet", storage_options=options)


# --- presigned URLs as the clients make them by default ----------------------------------------------------------


def test_boto3s_default_presigned_url_is_refused_with_the_setting_that_fixes_it(gate):
    creds = gate.assume()
    default = boto3.client(
        "s3",
        endpoint_url=gate.endpoint,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    url = default.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "public/README.txt"})
    query = url.split("?", 1)[1]
    assert "AWSAccessKeyId=" in query and "Signature=" in query and "X-Amz-Algorithm" not in query, "boto3 presigns SigV2"
    status, headers, body = gate.raw("GET", url.removeprefix(gate.endpoint))
    assert (status, error_code(body)) == (400, "InvalidRequest")
    assert b"signature_version=&apos;s3v4&apos;" in body, body
    [event] = gate.audited(headers["x-amz-request-id"])
    assert event["decision"] == "deny" and event["outcome"]["error_code"] == "InvalidRequest"
    # The setting the message names makes the same call work.
    fixed = gate.client(creds)
    url = fixed.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "public/README.txt"})
    assert gate.raw("GET", url.removeprefix(gate.endpoint))[0] == 200


def test_the_aws_cli_presigns_usable_urls_once_set_to_sigv4(gate, tmp_path):
    refused = aws_cli(gate, tmp_path)("s3", "presign", "s3://lake/public/README.txt").stdout.strip()
    status, _, body = gate.raw("GET", refused.removeprefix(gate.endpoint))
    assert (status, error_code(body)) == (400, "InvalidRequest")
    assert b"aws configure set default.s3.signature_version s3v4" in body
    configured = aws_cli(gate, tmp_path, config="[default]\ns3 =\n    signature_version = s3v4\n")
    url = configured("s3", "presign", "s3://lake/public/README.txt").stdout.strip()
    status, _, body = gate.raw("GET", url.removeprefix(gate.endpoint))
    assert status == 200 and body.startswith(b"Lakegate demo lake")


# --- keys holding a literal % (Hive and Spark partition escapes) ---------------------------------------------------

HIVE_DIR = "sales/hive/ts=2024-01-01 00%3A00%3A00"
HIVE_KEY = f"{HIVE_DIR}/part-0.parquet"


def test_hive_escaped_keys_round_trip_with_boto3(alice):
    alice.put_object(Bucket="lake", Key=HIVE_KEY, Body=b"partition")
    assert alice.get_object(Bucket="lake", Key=HIVE_KEY)["Body"].read() == b"partition"
    assert alice.head_object(Bucket="lake", Key=HIVE_KEY)["ContentLength"] == 9
    # boto3 lists with encoding-type=url and decodes what it gets: the keys come back exactly as stored.
    listed = alice.list_objects_v2(Bucket="lake", Prefix="sales/hive/ts=2024-01-01 00%3A", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == [f"{HIVE_DIR}/"]
    listed = alice.list_objects(Bucket="lake", Prefix=f"{HIVE_DIR}/")
    assert [o["Key"] for o in listed["Contents"]] == [HIVE_KEY]
    copy = f"{HIVE_DIR}/part-1.parquet"
    alice.copy_object(Bucket="lake", Key=copy, CopySource={"Bucket": "lake", "Key": HIVE_KEY})
    deleted = alice.delete_objects(Bucket="lake", Delete={"Objects": [{"Key": HIVE_KEY}, {"Key": copy}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == [HIVE_KEY, copy]


def test_listings_show_percent_keys_raw_or_url_encoded_as_asked(gate, alice):
    alice.put_object(Bucket="lake", Key=HIVE_KEY, Body=b"partition")
    bearer = {"Authorization": f"Bearer {gate.token('alice', 'analysts')}"}
    prefix = "prefix=sales%2Fhive%2F"
    raw = gate.raw("GET", f"/lake?list-type=2&{prefix}", bearer)[2]
    assert f"<Key>{HIVE_KEY}</Key>".encode() in raw, raw
    encoded = gate.raw("GET", f"/lake?list-type=2&encoding-type=url&{prefix}", bearer)[2]
    assert b"<Key>sales/hive/ts%3D2024-01-01%2000%253A00%253A00/part-0.parquet</Key>" in encoded, encoded
    assert b"<Prefix>sales/hive/</Prefix>" in encoded
    v1 = gate.raw("GET", f"/lake?encoding-type=url&{prefix}", bearer)[2]
    assert b"<Key>sales/hive/ts%3D2024-01-01%2000%253A00%253A00/part-0.parquet</Key>" in v1, v1


def test_hive_escaped_keys_round_trip_with_the_aws_cli(gate, tmp_path):
    aws = aws_cli(gate, tmp_path)
    table = tmp_path / "table" / "ts=2024-01-01 00%3A00%3A00"
    table.mkdir(parents=True)
    (table / "part-0.parquet").write_bytes(b"cli partition")
    aws("s3", "sync", "--only-show-errors", str(tmp_path / "table"), "s3://lake/sales/cli-hive/")
    assert "part-0.parquet" in aws("s3", "ls", "s3://lake/sales/cli-hive/ts=2024-01-01 00%3A00%3A00/").stdout
    back = tmp_path / "back.parquet"
    aws("s3", "cp", "--only-show-errors", "s3://lake/sales/cli-hive/ts=2024-01-01 00%3A00%3A00/part-0.parquet", str(back))
    assert back.read_bytes() == b"cli partition"
    aws("s3", "rm", "--only-show-errors", "--recursive", "s3://lake/sales/cli-hive/")
    assert aws("s3", "ls", "s3://lake/sales/cli-hive/", check=False).stdout == ""
