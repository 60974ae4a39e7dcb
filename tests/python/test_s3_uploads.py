"""ListMultipartUploads on the embedded store: the uploads in progress, read from the store's own files, shown
only under prefixes the caller may list."""

import botocore
import pytest

from s3_support import S3Gate


@pytest.fixture(scope="module")
def gate(lakegate):
    return S3Gate(lakegate)


@pytest.fixture(scope="module")
def alice(gate):
    return gate.client(gate.assume("alice", "analysts"))


@pytest.fixture(scope="module")
def henry(gate):
    return gate.client(gate.assume("henry", "hr"))


def test_alice_lists_her_uploads_in_sales_and_sees_none_of_hr(gate, alice, henry):
    mine = [alice.create_multipart_upload(Bucket="lake", Key=f"sales/mpu/{n}.bin")["UploadId"] for n in ("a", "b")]
    theirs = henry.create_multipart_upload(Bucket="lake", Key="hr/mpu/secret.bin")["UploadId"]
    try:
        r = alice.list_multipart_uploads(Bucket="lake", Prefix="sales/")
        assert r["Bucket"] == "lake" and r["Prefix"] == "sales/" and r["IsTruncated"] is False
        listed = [(u["Key"], u["UploadId"]) for u in r["Uploads"]]
        assert listed == [("sales/mpu/a.bin", mine[0]), ("sales/mpu/b.bin", mine[1])]
        assert all(u["StorageClass"] == "STANDARD" and u["Initiated"] and u["Owner"]["ID"] for u in r["Uploads"])
        assert theirs not in str(r)
        # HR's own listing shows HR's upload; alice may not list there, nor the whole bucket.
        assert [u["UploadId"] for u in henry.list_multipart_uploads(Bucket="lake", Prefix="hr/")["Uploads"]] == [theirs]
        for prefix in ("hr/", ""):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                alice.list_multipart_uploads(Bucket="lake", Prefix=prefix)
            assert e.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        for key, upload_id in (("sales/mpu/a.bin", mine[0]), ("sales/mpu/b.bin", mine[1])):
            alice.abort_multipart_upload(Bucket="lake", Key=key, UploadId=upload_id)
        henry.abort_multipart_upload(Bucket="lake", Key="hr/mpu/secret.bin", UploadId=theirs)
    assert "Uploads" not in alice.list_multipart_uploads(Bucket="lake", Prefix="sales/mpu/"), "aborted uploads are gone"


def test_max_uploads_pages_through_the_list(alice):
    ids = [alice.create_multipart_upload(Bucket="lake", Key=f"sales/pages/{n}")["UploadId"] for n in range(3)]
    try:
        first = alice.list_multipart_uploads(Bucket="lake", Prefix="sales/pages/", MaxUploads=2)
        assert first["IsTruncated"] is True and len(first["Uploads"]) == 2
        rest = alice.list_multipart_uploads(
            Bucket="lake",
            Prefix="sales/pages/",
            KeyMarker=first["NextKeyMarker"],
            UploadIdMarker=first["NextUploadIdMarker"],
        )
        assert [u["Key"] for u in rest["Uploads"]] == ["sales/pages/2"] and rest["IsTruncated"] is False
    finally:
        for n, upload_id in enumerate(ids):
            alice.abort_multipart_upload(Bucket="lake", Key=f"sales/pages/{n}", UploadId=upload_id)


def test_completed_uploads_leave_the_list(alice):
    key = "sales/mpu/done.bin"
    upload_id = alice.create_multipart_upload(Bucket="lake", Key=key)["UploadId"]
    part = alice.upload_part(Bucket="lake", Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 10)
    listed = alice.list_multipart_uploads(Bucket="lake", Prefix=key)["Uploads"]
    assert [u["UploadId"] for u in listed] == [upload_id]
    alice.complete_multipart_upload(
        Bucket="lake", Key=key, UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    assert "Uploads" not in alice.list_multipart_uploads(Bucket="lake", Prefix=key)
