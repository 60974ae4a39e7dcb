"""The S3 front with the data ecosystem's own S3 clients, as users configure them: s3fs (fsspec, pandas), pyarrow's
S3FileSystem, DuckDB's httpfs and rclone, and boto3 and the AWS CLI with no configuration but the endpoint and the
credentials. Each is alice with credentials from Lakegate's STS: she reads and writes Parquet under `sales/`, and
is refused under `hr/` with the client's own permission error, with nothing written there (henry of HR looks)."""

import io
import json
import os
import pathlib
import shutil
import subprocess

import boto3
import botocore
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

from conftest import REPO, Lakegate, wait_for_port
from s3_support import REGION, ROLE_ARN, S3Gate, arrow_fs

SALES = pa.table({"region": ["EU", "US"], "amount": [1200, 3400]})


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


@pytest.fixture(scope="module")
def creds(gate):
    return gate.assume("alice", "analysts")


@pytest.fixture(scope="module")
def henry(gate):
    return gate.client(gate.assume("henry", "hr"))


def parquet_bytes(table=SALES) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["region"])


def nothing_under(henry, prefix: str) -> bool:
    """What HR sees under `prefix`: no object and no upload left behind."""
    objects = henry.list_objects_v2(Bucket="lake", Prefix=prefix)
    uploads = henry.list_multipart_uploads(Bucket="lake", Prefix=prefix)
    return objects["KeyCount"] == 0 and not uploads.get("Uploads")


# --- s3fs (fsspec) ---------------------------------------------------------------------------------------------------


def s3fs_as(gate, creds, **kwargs):
    import s3fs

    return s3fs.S3FileSystem(
        key=creds["AccessKeyId"],
        secret=creds["SecretAccessKey"],
        token=creds["SessionToken"],
        endpoint_url=gate.endpoint,
        client_kwargs={"region_name": REGION},
        skip_instance_cache=True,
        use_listings_cache=False,
        config_kwargs={"retries": {"max_attempts": 1}},  # an error shows at once, not after botocore's backoff
        **kwargs,
    )


def test_s3fs_writes_lists_reads_and_removes_parquet_in_sales(gate, creds):
    import pandas as pd

    fs = s3fs_as(gate, creds)
    with fs.open("lake/sales/s3fs/q3.parquet", "wb") as f:
        f.write(parquet_bytes())
    assert fs.ls("lake/sales/s3fs/") == ["lake/sales/s3fs/q3.parquet"]
    with fs.open("lake/sales/s3fs/q3.parquet", "rb") as f:
        assert rows(pq.read_table(f)) == rows(SALES)
    # pandas opens s3:// URLs through s3fs.
    options = {"key": creds["AccessKeyId"], "secret": creds["SecretAccessKey"], "token": creds["SessionToken"],
               "endpoint_url": gate.endpoint, "client_kwargs": {"region_name": REGION}}
    frame = pd.read_parquet("s3://lake/sales/s3fs/q3.parquet", storage_options=options)
    assert frame.sort_values("region").to_dict("records") == rows(SALES)
    fs.rm("lake/sales/s3fs/q3.parquet")
    assert not fs.exists("lake/sales/s3fs/q3.parquet")


def test_s3fs_puts_finds_globs_and_removes_a_tree_in_sales(gate, creds, tmp_path):
    tree = tmp_path / "tree"
    for part in ("region=EU", "region=US"):
        (tree / part).mkdir(parents=True)
        (tree / part / "part-0.parquet").write_bytes(parquet_bytes())
    fs = s3fs_as(gate, creds)
    fs.put(str(tree) + "/", "lake/sales/s3fs-tree/", recursive=True)
    uploaded = ["lake/sales/s3fs-tree/region=EU/part-0.parquet", "lake/sales/s3fs-tree/region=US/part-0.parquet"]
    # find lists the whole prefix (delimiter= empty); glob asks what the pattern's root is (HEAD, then a listing).
    assert fs.find("lake/sales/s3fs-tree/") == uploaded
    assert sorted(fs.glob("lake/sales/s3fs-tree/*/*.parquet")) == uploaded
    fs.rm("lake/sales/s3fs-tree/", recursive=True)
    assert fs.find("lake/sales/s3fs-tree/") == []


def test_s3fs_uploads_a_file_larger_than_its_block_size_in_parts(gate, creds):
    data = os.urandom(6 * 1024 * 1024)
    fs = s3fs_as(gate, creds, default_block_size=5 * 1024 * 1024)
    with fs.open("lake/sales/s3fs/big.bin", "wb") as f:
        for at in range(0, len(data), 1024 * 1024):  # a part goes up once 5 MiB are buffered
            f.write(data[at:at + 1024 * 1024])
    assert fs.info("lake/sales/s3fs/big.bin")["ETag"].strip('"').endswith("-2"), "two parts"
    assert fs.cat("lake/sales/s3fs/big.bin") == data
    fs.rm("lake/sales/s3fs/big.bin")


def test_s3fs_is_refused_in_hr_with_permission_error_and_writes_nothing(gate, creds, henry):
    fs = s3fs_as(gate, creds)
    with pytest.raises(PermissionError):
        with fs.open("lake/hr/s3fs/q3.parquet", "wb") as f:
            f.write(parquet_bytes())
    with pytest.raises(PermissionError):
        fs.cat("lake/hr/salaries.csv")
    with pytest.raises(PermissionError):
        fs.ls("lake/hr/")
    assert nothing_under(henry, "hr/s3fs/")


# --- pyarrow's own S3 filesystem ------------------------------------------------------------------------------------


def test_pyarrow_writes_reads_and_deletes_a_parquet_file_in_sales(gate, creds):
    fs = arrow_fs(gate, creds)
    pq.write_table(SALES, "lake/sales/arrow-one/q1.parquet", filesystem=fs)
    assert rows(pq.read_table("lake/sales/arrow-one/q1.parquet", filesystem=fs)) == rows(SALES)
    fs.delete_file("lake/sales/arrow-one/q1.parquet")
    assert fs.get_file_info("lake/sales/arrow-one/q1.parquet").type == pyarrow.fs.FileType.NotFound


def test_pyarrow_writes_and_reads_a_partitioned_dataset_in_sales(gate, creds):
    import pyarrow.dataset as ds

    fs = arrow_fs(gate, creds)
    ds.write_dataset(SALES, "lake/sales/arrow", filesystem=fs, format="parquet", partitioning=["region"],
                     partitioning_flavor="hive", existing_data_behavior="delete_matching")
    back = ds.dataset("lake/sales/arrow", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert rows(back.select(["region", "amount"])) == rows(SALES)
    files = fs.get_file_info(pyarrow.fs.FileSelector("lake/sales/arrow", recursive=True))
    assert sorted(f.path for f in files if f.is_file) == [
        "lake/sales/arrow/region=EU/part-0.parquet",
        "lake/sales/arrow/region=US/part-0.parquet",
    ]
    fs.delete_dir_contents("lake/sales/arrow")


def test_pyarrow_is_refused_in_hr_and_writes_nothing(gate, creds, henry):
    import pyarrow.dataset as ds

    fs = arrow_fs(gate, creds)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        ds.write_dataset(SALES, "lake/hr/arrow", filesystem=fs, format="parquet")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        pq.write_table(SALES, "lake/hr/arrow.parquet", filesystem=fs)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        pq.read_table("lake/hr/salaries.parquet", filesystem=fs)
    assert nothing_under(henry, "hr/arrow")


# --- DuckDB's httpfs ------------------------------------------------------------------------------------------------


@pytest.fixture
def duck(gate, creds, tmp_path):
    """DuckDB with httpfs loaded from its PyPI wheel (no extension download) and an S3 secret for Lakegate."""
    import duckdb
    import duckdb_extension_httpfs

    [extension] = pathlib.Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension")
    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext"), "autoinstall_known_extensions": False})
    con.execute(f"INSTALL '{extension}'")
    con.execute("LOAD httpfs")
    con.execute(
        "CREATE SECRET lakegate (TYPE s3, KEY_ID ?, SECRET ?, SESSION_TOKEN ?, ENDPOINT ?, URL_STYLE 'path', "
        "USE_SSL false, REGION ?)".replace("?", "'{}'").format(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"],
            gate.endpoint.removeprefix("http://"), REGION,
        )
    )
    yield con
    con.close()


def test_duckdb_copies_parquet_to_sales_and_reads_it_back_by_glob(duck):
    duck.execute("COPY (SELECT 'EU' AS region, 1200 AS amount) TO 's3://lake/sales/duckdb/eu.parquet' (FORMAT parquet)")
    duck.execute("COPY (SELECT 'US' AS region, 3400 AS amount) TO 's3://lake/sales/duckdb/us.parquet' (FORMAT parquet)")
    one = duck.execute("SELECT region, amount FROM read_parquet('s3://lake/sales/duckdb/eu.parquet')").fetchall()
    assert one == [("EU", 1200)]
    every = duck.execute("SELECT region, amount FROM read_parquet('s3://lake/sales/duckdb/*.parquet') ORDER BY 1")
    assert every.fetchall() == [("EU", 1200), ("US", 3400)]


def test_duckdb_writes_a_hive_partitioned_table_to_sales_and_reads_it_back(duck):
    duck.execute(
        "COPY (SELECT * FROM (VALUES ('EU', 1200), ('US', 3400)) t(region, amount)) "
        "TO 's3://lake/sales/duckdb-hive' (FORMAT parquet, PARTITION_BY (region))"
    )
    files = duck.execute("SELECT file FROM glob('s3://lake/sales/duckdb-hive/**') ORDER BY 1").fetchall()
    assert [f for (f,) in files] == [
        "s3://lake/sales/duckdb-hive/region=EU/data_0.parquet",
        "s3://lake/sales/duckdb-hive/region=US/data_0.parquet",
    ]
    back = duck.execute(
        "SELECT region, amount FROM read_parquet('s3://lake/sales/duckdb-hive/*/*.parquet', hive_partitioning=true) "
        "ORDER BY 1"
    )
    assert back.fetchall() == [("EU", 1200), ("US", 3400)]


def test_duckdb_is_refused_in_hr_and_writes_nothing(duck, henry):
    import duckdb

    with pytest.raises(duckdb.HTTPException, match="403"):
        duck.execute("COPY (SELECT 1 AS x) TO 's3://lake/hr/duckdb/x.parquet' (FORMAT parquet)")
    with pytest.raises(duckdb.HTTPException, match="403"):
        duck.execute("SELECT * FROM read_parquet('s3://lake/hr/salaries.parquet')")
    with pytest.raises(duckdb.HTTPException, match="403"):
        duck.execute("SELECT * FROM read_parquet('s3://lake/hr/*.parquet')")
    assert nothing_under(henry, "hr/duckdb/")


# --- rclone ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def rclone(gate, creds, tmp_path):
    """`rclone ...` with a remote `lg:` configured by environment variables alone, as in a container."""
    binary = shutil.which("rclone")
    assert binary, "rclone is not installed (scripts/install-test-deps)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update({
        "RCLONE_CONFIG": str(tmp_path / "none.conf"),
        "RCLONE_CONFIG_LG_TYPE": "s3",
        "RCLONE_CONFIG_LG_PROVIDER": "Other",
        "RCLONE_CONFIG_LG_ENDPOINT": gate.endpoint,
        "RCLONE_CONFIG_LG_REGION": REGION,
        "RCLONE_CONFIG_LG_ACCESS_KEY_ID": creds["AccessKeyId"],
        "RCLONE_CONFIG_LG_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "RCLONE_CONFIG_LG_SESSION_TOKEN": creds["SessionToken"],
        "RCLONE_CONFIG_LG_FORCE_PATH_STYLE": "true",
    })

    def run(*args, check=True):
        return subprocess.run([binary, "--retries", "1", "--low-level-retries", "1", *args], env=env,
                              capture_output=True, check=check, timeout=60)

    return run


def test_rclone_copies_lists_cats_and_deletes_parquet_in_sales(rclone, tmp_path):
    local = tmp_path / "up"
    local.mkdir()
    (local / "q1.parquet").write_bytes(parquet_bytes())
    # A directory is copied after a listing of the destination; a single file after rclone's bucket check
    # (PUT /lake, which S3 answers 409 BucketAlreadyOwnedByYou). Both upload with x-amz-acl: private.
    rclone("copy", str(local), "lg:lake/sales/rclone/")
    rclone("copyto", str(local / "q1.parquet"), "lg:lake/sales/rclone/q2.parquet")
    size = str(len(parquet_bytes())).encode()
    assert rclone("ls", "lg:lake/sales/rclone/").stdout.split() == [size, b"q1.parquet", size, b"q2.parquet"]
    cat = rclone("cat", "lg:lake/sales/rclone/q1.parquet").stdout
    assert rows(pq.read_table(io.BytesIO(cat))) == rows(SALES)
    rclone("delete", "lg:lake/sales/rclone/")
    assert rclone("ls", "lg:lake/sales/rclone/").stdout == b""


def test_rclone_is_refused_in_hr_and_writes_nothing(rclone, tmp_path, henry):
    local = tmp_path / "up"
    local.mkdir()
    (local / "q1.parquet").write_bytes(parquet_bytes())
    refused = rclone("copy", str(local), "lg:lake/hr/rclone/", check=False)
    assert refused.returncode != 0 and b"AccessDenied" in refused.stderr, refused.stderr
    refused = rclone("cat", "lg:lake/hr/salaries.csv", check=False)
    assert refused.returncode != 0 and b"AccessDenied" in refused.stderr, refused.stderr
    assert nothing_under(henry, "hr/rclone/")


# --- boto3 and the AWS CLI as they come ------------------------------------------------------------------------------


def default_boto3(gate, creds):
    """A boto3 client with nothing set but the endpoint and the credentials (so: checksums, retries as shipped)."""
    return boto3.client(
        "s3",
        endpoint_url=gate.endpoint,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def test_default_boto3_puts_gets_lists_and_uploads_in_parts_in_sales(gate, creds, tmp_path):
    s3 = default_boto3(gate, creds)
    s3.put_object(Bucket="lake", Key="sales/default/q1.parquet", Body=parquet_bytes())
    got = s3.get_object(Bucket="lake", Key="sales/default/q1.parquet")["Body"].read()
    assert rows(pq.read_table(io.BytesIO(got))) == rows(SALES)
    # upload_file's default threshold is 8 MiB: 9 MiB goes up in parts, with the default checksums.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    s3.upload_file(str(big), "lake", "sales/default/big.bin")
    head = s3.head_object(Bucket="lake", Key="sales/default/big.bin")
    assert head["ContentLength"] == 9 * 1024 * 1024 and head["ETag"].strip('"').endswith("-2")
    listed = s3.list_objects_v2(Bucket="lake", Prefix="sales/default/")
    assert [o["Key"] for o in listed["Contents"]] == ["sales/default/big.bin", "sales/default/q1.parquet"]
    s3.download_file("lake", "sales/default/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_default_boto3_is_refused_in_hr_and_writes_nothing(gate, creds, henry, tmp_path):
    s3 = default_boto3(gate, creds)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="lake", Key="hr/default/q1.parquet", Body=parquet_bytes())
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    with pytest.raises(boto3.exceptions.S3UploadFailedError, match="AccessDenied"):
        s3.upload_file(str(big), "lake", "hr/default/big.bin")
    assert nothing_under(henry, "hr/default/")


def test_the_aws_cli_as_it_comes_uploads_in_parts_and_downloads_in_sales(gate, tmp_path):
    from test_s3_clients import aws_cli

    aws = aws_cli(gate, tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    aws("s3", "cp", "--only-show-errors", str(big), "s3://lake/sales/cli-default/big.bin")
    head = json.loads(aws("s3api", "head-object", "--bucket", "lake", "--key", "sales/cli-default/big.bin").stdout)
    assert head["ETag"].strip('"').endswith("-2"), "the CLI's default 8 MiB parts"
    aws("s3", "cp", "--only-show-errors", "s3://lake/sales/cli-default/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_the_aws_cli_as_it_comes_is_refused_in_hr_and_writes_nothing(gate, tmp_path, henry):
    from test_s3_clients import aws_cli

    aws = aws_cli(gate, tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    refused = aws("s3", "cp", "--only-show-errors", str(big), "s3://lake/hr/cli-default/big.bin", check=False)
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr, refused.stderr
    assert nothing_under(henry, "hr/cli-default/")


@pytest.fixture(scope="module")
def tls_lakegate(tmp_path_factory):
    """A server whose S3 port serves HTTPS with a dev CA (certs/gen-dev.sh), as production does."""
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(REPO / "certs" / "gen-dev.sh"), str(certs), "127.0.0.1"], check=True,
                   capture_output=True)
    server = Lakegate(config=f'[s3]\ntls = {{ cert = "{certs}/server.crt", key = "{certs}/server.key" }}\n')
    wait_for_port(server.s3_port)
    yield server, f"https://127.0.0.1:{server.s3_port}", str(certs / "ca.crt")
    server.stop()


def default_boto3_over_tls(tls_lakegate, sub, groups):
    server, endpoint, ca = tls_lakegate
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION, verify=ca)
    creds = sts.assume_role_with_web_identity(
        RoleArn=ROLE_ARN, RoleSessionName=f"{sub}-tls", WebIdentityToken=server.token(sub, groups)
    )["Credentials"]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        verify=ca,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def sent_streaming_trailer(client) -> list[str]:
    """Records the x-amz-content-sha256 of every upload the client sends."""
    seen = []
    client.meta.events.register(
        "before-send.s3", lambda request, **_: seen.append(request.headers.get("X-Amz-Content-SHA256", b"").decode())
    )
    return seen


def test_default_boto3_over_https_uploads_aws_chunked_with_a_checksum_trailer_in_sales(tls_lakegate, tmp_path):
    s3 = default_boto3_over_tls(tls_lakegate, "alice", ["analysts"])
    sent = sent_streaming_trailer(s3)
    s3.put_object(Bucket="lake", Key="sales/tls/q1.parquet", Body=parquet_bytes())
    assert sent[-1] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "over HTTPS, botocore sends the CRC32 as a trailer"
    got = s3.get_object(Bucket="lake", Key="sales/tls/q1.parquet")["Body"].read()
    assert rows(pq.read_table(io.BytesIO(got))) == rows(SALES)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    s3.upload_file(str(big), "lake", "sales/tls/big.bin")
    assert sent.count("STREAMING-UNSIGNED-PAYLOAD-TRAILER") == 3, "the object and its two parts"
    assert s3.head_object(Bucket="lake", Key="sales/tls/big.bin")["ETag"].strip('"').endswith("-2")
    assert s3.get_object(Bucket="lake", Key="sales/tls/big.bin")["Body"].read() == big.read_bytes()


def test_default_boto3_over_https_is_refused_in_hr_and_writes_nothing(tls_lakegate):
    s3 = default_boto3_over_tls(tls_lakegate, "alice", ["analysts"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="lake", Key="hr/tls/q1.parquet", Body=parquet_bytes())
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    henry = default_boto3_over_tls(tls_lakegate, "henry", ["hr"])
    assert henry.list_objects_v2(Bucket="lake", Prefix="hr/tls/")["KeyCount"] == 0
