"""A pytest plugin loaded into ceph's s3-tests (`-p s3tests_plugin`) by test_s3_conformance.py.

It adapts the unmodified suite to a store reached through Lakegate, in three ways, all driven by the JSON file
named by `LAKEGATE_S3TESTS_TARGET` (written by s3_conformance.py):

- **Session credentials.** s3-tests' config has an access key and a secret per account, no session token, and
  its helpers build every client from those two (`boto3.client(aws_access_key_id=..., aws_secret_access_key=...)`).
  Lakegate's STS credentials are useless without their token, so botocore's `Session.create_client` is wrapped:
  a client made with one of the configured access key ids gets that key's session token, unless it was given
  one. One seam covers `boto3.client` and `boto3.resource`, whatever module builds them; the suite's own files
  stay untouched (they are read-only, shared by every worktree).
- **Buckets.** s3-tests makes a fresh bucket for nearly every test and deletes it afterwards. Lakegate does not
  create or delete buckets (bucket administration is the store operator's), so `get_new_bucket`,
  `get_new_bucket_resource` and the clean-up (`nuke_prefixed_buckets`) are replaced by an out-of-band
  provisioner: the store's own S3 API with the store's key (moto), or a directory under the embedded store
  (a bucket is a directory there). The direct run uses the same provisioner, so all runs start each test
  from the same state and only the object-level requests differ. A bucket the suite asks for as `alt` is made
  the same way: the store owns every bucket, and Lakegate's policy, not ownership, decides who may use it.
- **Selection.** Only the tests whose names match one of `include` and none of `exclude` run; the others are
  deselected (reported as such, not as passes).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import boto3
import botocore.session

from s3_conformance import provisioner

TARGET = json.loads(pathlib.Path(os.environ["LAKEGATE_S3TESTS_TARGET"]).read_text())
SESSION_TOKENS: dict[str, str] = TARGET.get("session_tokens", {})

_create_client = botocore.session.Session.create_client


def _create_client_with_session_token(self, *args, **kwargs):
    key = kwargs.get("aws_access_key_id")
    if key in SESSION_TOKENS and not kwargs.get("aws_session_token"):
        kwargs["aws_session_token"] = SESSION_TOKENS[key]
    return _create_client(self, *args, **kwargs)


botocore.session.Session.create_client = _create_client_with_session_token


PROVISIONER = provisioner(TARGET["buckets"])
CREATED: list[str] = []


def _provision(name):
    PROVISIONER.create(name)
    CREATED.append(name)


def get_new_bucket(client=None, name=None):
    import s3tests.functional as f

    name = name or f.get_new_bucket_name()
    _provision(name)
    return name


def get_new_bucket_resource(name=None):
    import s3tests.functional as f

    name = name or f.get_new_bucket_name()
    _provision(name)
    s3 = boto3.resource(
        "s3",
        aws_access_key_id=f.config.main_access_key,
        aws_secret_access_key=f.config.main_secret_key,
        endpoint_url=f.config.default_endpoint,
    )
    return s3.Bucket(name)


def nuke_prefixed_buckets(prefix, client=None):
    for name in [b for b in CREATED if b.startswith(prefix)]:
        PROVISIONER.remove(name)
        CREATED.remove(name)


def _setup_bucket_object_acl(bucket_acl, object_acl, client=None):
    # The suite makes the bucket of some object tests with an explicit ACL. Only "private" (the default, what a
    # bucket and object without an ACL are) is provisioned here, with an object put without ACL; any other ACL
    # is left to the suite (and refused by Lakegate: it does not offer ACLs).
    import s3tests.functional.test_s3 as t

    if bucket_acl != "private" or object_acl != "private":
        return _ORIGINAL_SETUP_ACL(bucket_acl, object_acl, client)
    name = get_new_bucket()
    (client or t.get_client()).put_object(Bucket=name, Key="foo")
    return name


_ORIGINAL_SETUP_ACL = None


def setup():
    # The suite's own setup and teardown build an alt and a tenant client on every test only to find the
    # buckets to delete; the provisioner knows them already (and saves the run a third of its time).
    nuke_prefixed_buckets("")


REPLACED = {
    "setup": setup,
    "teardown": setup,
    "get_new_bucket": get_new_bucket,
    "get_new_bucket_resource": get_new_bucket_resource,
    "nuke_prefixed_buckets": nuke_prefixed_buckets,
}


def _selected(name: str) -> bool:
    base = name.split("[", 1)[0]
    return any(re.fullmatch(p, base) for p in TARGET["include"]) and not any(
        re.fullmatch(p, base) for p in TARGET["exclude"]
    )


def pytest_collection_modifyitems(config, items):
    # The test modules bound the helpers by name at import (`from . import get_new_bucket`): replace them
    # in every s3-tests module that has them, now that collection has imported them all.
    global _ORIGINAL_SETUP_ACL
    import s3tests.functional.test_s3 as t

    _ORIGINAL_SETUP_ACL = _ORIGINAL_SETUP_ACL or t._setup_bucket_object_acl
    t._setup_bucket_object_acl = _setup_bucket_object_acl
    for module_name, module in list(sys.modules.items()):
        if module_name == "s3tests.functional" or module_name.startswith("s3tests.functional."):
            for attr, replacement in REPLACED.items():
                if hasattr(module, attr):
                    setattr(module, attr, replacement)
    keep = [i for i in items if _selected(i.name)]
    dropped = [i for i in items if not _selected(i.name)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
