"""The Iceberg REST catalog on the control endpoint (`/iceberg`), driven by real clients: PyIceberg, DuckDB's iceberg
extension, boto3 with the credentials the catalog vends, and raw REST calls where a client hides what is specified.

What it specifies, on the demo world (namespaces `sales`, `hr` and `scratch`; warehouse `lake`, prefix `lake`):
- analysts (alice, bob) create, load, commit to, rename and drop tables in `scratch`; carol (hr) does the same in
  `hr`; dave does nothing: he lists no namespace, a table he may not see does not exist for him (404), creating is
  403; each principal lists only the namespaces it may see a table in or create tables in, and only the tables it
  may read;
- Lakegate assigns every table's location under `s3://lake/iceberg/<ns>/<table>-<uuid>`; another location is a 400;
- loading with `X-Iceberg-Access-Delegation: vended-credentials` gives a principal with full access S3 credentials
  for Lakegate's own S3 front, good for the table's location only (read-write where it may commit, read-only
  otherwise); a principal under a row filter, mask or column restriction is refused them (403, use the SQL gateway);
- commits are compare-and-swap on the spec's requirements: of two commits on one parent exactly one lands, the
  other is a 409 CommitFailedException that changed nothing, and the loser can refresh and retry;
- errors have the spec's JSON form, and every catalog call, and every vending, is an audit record.

Each test uses tables of its own (unique names), so they share one server; tests that change policies start theirs.
"""

import json
import pathlib
import re
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore
import pyarrow as pa
import pytest
import requests
from botocore.config import Config

from conftest import REPO, Lakegate, demo_token, eventually

WAREHOUSE = "lake"
REGION = "us-east-1"
VENDED = {"X-Iceberg-Access-Delegation": "vended-credentials"}
LOCATION = re.compile(r"s3://lake/iceberg/(?P<ns>[^/]+)/(?P<table>[^/]+)-(?P<id>[0-9a-f]{8})/?")

ROWS = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "name": pa.array(["ada", "bo", "cy"], pa.string()),
    "amount": pa.array([1.5, 2.5, 3.5], pa.float64()),
})


def batch(*ids):
    """Rows with the schema of ROWS, one per id."""
    return pa.table({
        "id": pa.array(list(ids), pa.int64()),
        "name": pa.array([f"row{i}" for i in ids], pa.string()),
        "amount": pa.array([i / 2 for i in ids], pa.float64()),
    })


def rows(table):
    """The rows of an arrow table (or of several), as comparable dicts sorted by id."""
    tables = table if isinstance(table, (list, tuple)) else [table]
    return sorted((r for t in tables for r in t.to_pylist()), key=lambda r: r["id"])


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def lg():
    """One server on the demo world for the tests that do not change policies."""
    server = Lakegate()
    yield server
    server.stop()


_tokens = {}


def token(lg, user):
    key = (lg.data_dir, user)
    if key not in _tokens:
        _tokens[key] = demo_token(lg, user)
    return _tokens[key]


# --- raw REST --------------------------------------------------------------------------------------------------------


def base_url(lg):
    return f"{lg.control_url}/iceberg"


def rest(lg, user, method, path, *, bearer=None, headers=None, **kwargs):
    """A call to `/iceberg/v1/lake/<path>` (or `/iceberg/v1/<path>` for `config...`) as `user` (None: no token)."""
    url = f"{base_url(lg)}/v1/{path}" if path.startswith("config") else f"{base_url(lg)}/v1/{WAREHOUSE}/{path}"
    h = dict(headers or {})
    if bearer is None and user is not None:
        bearer = token(lg, user)
    if bearer is not None:
        h["Authorization"] = f"Bearer {bearer}"
    if "json" in kwargs or "data" in kwargs:
        h.setdefault("Content-Type", "application/json")
    return requests.request(method, url, headers=h, timeout=60, **kwargs)


def show(r):
    return f"{r.request.method} {r.url} -> {r.status_code} {r.text[:2000]}"


def assert_error(r, status, kind):
    """The spec's error response: {"error": {"message", "type", "code"}}, with the status and type asked."""
    assert r.status_code == status, show(r)
    body = r.json()
    assert set(body) == {"error"}, show(r)
    error = body["error"]
    assert error["type"] == kind and error["code"] == status, show(r)
    assert isinstance(error["message"], str) and error["message"], show(r)
    return error


def create_raw(lg, user, ns, name, **extra):
    """Creates a one-column table with a raw CreateTableRequest; returns the response."""
    body = {
        "name": name,
        "schema": {"type": "struct", "schema-id": 0,
                   "fields": [{"id": 1, "name": "id", "type": "long", "required": False}]},
        **extra,
    }
    return rest(lg, user, "POST", f"namespaces/{ns}/tables", json=body)


def split_location(location):
    """s3://bucket/a/b -> ("bucket", "a/b/")."""
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/") + "/"


# --- PyIceberg --------------------------------------------------------------------------------------------------------


def catalog(lg, user, **properties):
    """PyIceberg's REST catalog as `user`, with its defaults (it asks for vended credentials)."""
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog("lakegate", uri=base_url(lg), warehouse=WAREHOUSE, token=token(lg, user), **properties)


def new_table(lg, user="alice", ns="scratch", prefix="t", data=ROWS):
    """A table created by `user` with PyIceberg from `data`'s schema, with `data` appended; (catalog, ident, table)."""
    cat = catalog(lg, user)
    ident = (ns, unique(prefix))
    table = cat.create_table(ident, schema=data.schema)
    if data is not None and data.num_rows:
        table.append(data)
    return cat, ident, cat.load_table(ident)


# --- 1. PyIceberg end to end -----------------------------------------------------------------------------------------


def test_config_names_the_warehouse_prefix_and_the_endpoints(lg):
    r = rest(lg, "alice", "GET", "config", params={"warehouse": WAREHOUSE})
    assert r.status_code == 200, show(r)
    config = r.json()
    assert config["defaults"] == {} and config["overrides"] == {"prefix": WAREHOUSE}
    endpoints = set(config["endpoints"])
    # What PyIceberg and DuckDB check before calling (both use only the listed endpoints when a list is given).
    for needed in [
        "GET /v1/{prefix}/namespaces", "POST /v1/{prefix}/namespaces", "GET /v1/{prefix}/namespaces/{namespace}",
        "HEAD /v1/{prefix}/namespaces/{namespace}", "DELETE /v1/{prefix}/namespaces/{namespace}",
        "POST /v1/{prefix}/namespaces/{namespace}/properties",
        "GET /v1/{prefix}/namespaces/{namespace}/tables", "POST /v1/{prefix}/namespaces/{namespace}/tables",
        "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        "POST /v1/{prefix}/tables/rename", "POST /v1/{prefix}/namespaces/{namespace}/register",
        "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
    ]:
        assert needed in endpoints, (needed, sorted(endpoints))


def test_pyiceberg_creates_appends_scans_lists_and_drops_a_table_in_scratch(lg):
    from pyiceberg.exceptions import NoSuchTableError

    cat = catalog(lg, "alice")
    assert ("scratch",) in cat.list_namespaces()

    ident = ("scratch", unique("pyiceberg"))
    table = cat.create_table(ident, schema=ROWS.schema)
    location = LOCATION.fullmatch(table.location())
    assert location and location["ns"] == "scratch" and location["table"] == ident[1], table.location()
    assert table.current_snapshot() is None

    table.append(ROWS)
    table.append(batch(4, 5))
    loaded = cat.load_table(ident)
    assert loaded.metadata.table_uuid == table.metadata.table_uuid
    assert len(loaded.snapshots()) == 2
    assert rows(loaded.scan().to_arrow()) == rows([ROWS, batch(4, 5)])
    assert rows(loaded.scan(row_filter="id >= 3", selected_fields=("id", "name")).to_arrow()) == [
        {"id": 3, "name": "cy"}, {"id": 4, "name": "row4"}, {"id": 5, "name": "row5"}]

    assert ident in cat.list_tables("scratch")
    assert cat.table_exists(ident)

    cat.drop_table(ident)
    assert not cat.table_exists(ident)
    assert ident not in cat.list_tables("scratch")
    with pytest.raises(NoSuchTableError):
        cat.load_table(ident)


def test_pyiceberg_gets_read_write_credentials_for_lakegates_s3_front(lg):
    _, ident, table = new_table(lg, prefix="vended")
    # What PyIceberg's FileIO was given: Lakegate's S3 front and session credentials.
    props = table.io.properties
    assert props["s3.endpoint"] == lg.s3_url
    assert props["s3.region"] == REGION and props["s3.path-style-access"] == "true"
    assert props["s3.access-key-id"] and props["s3.secret-access-key"] and props["s3.session-token"]

    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}", headers=VENDED)
    assert r.status_code == 200, show(r)
    result = r.json()
    assert result["metadata-location"].startswith(result["metadata"]["location"])
    [credential] = result["storage-credentials"]
    assert credential["prefix"].rstrip("/") == result["metadata"]["location"].rstrip("/")
    for config in (result["config"], credential["config"]):
        assert config["s3.endpoint"] == lg.s3_url and config["s3.region"] == REGION
        assert config["s3.path-style-access"] == "true"
        assert config["s3.access-key-id"] and config["s3.secret-access-key"] and config["s3.session-token"]

    # Without the header nothing is vended.
    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}")
    assert r.status_code == 200, show(r)
    assert "s3.secret-access-key" not in r.json().get("config", {}) and not r.json().get("storage-credentials")


def test_pyiceberg_renames_a_table_within_scratch(lg):
    from pyiceberg.exceptions import NoSuchTableError

    cat, ident, table = new_table(lg, prefix="before")
    renamed = ("scratch", unique("after"))
    cat.rename_table(ident, renamed)
    assert rows(cat.load_table(renamed).scan().to_arrow()) == rows(ROWS)
    assert cat.load_table(renamed).metadata.table_uuid == table.metadata.table_uuid
    with pytest.raises(NoSuchTableError):
        cat.load_table(ident)
    assert renamed in cat.list_tables("scratch") and ident not in cat.list_tables("scratch")


def test_pyiceberg_appends_to_a_table_with_a_descriptive_name(lg):
    # Iceberg puts long keys under a table's location (metadata/snap-<id>-<attempt>-<uuid>.avro, written as a
    # multipart upload by pyarrow); the embedded store keeps keys of about 130 bytes, which Lakegate's short
    # location id leaves room for with names of about 25 characters (docs/iceberg.md; a remote store has no limit).
    cat = catalog(lg, "alice")
    ident = ("scratch", unique("orders_by_region"))
    table = cat.create_table(ident, schema=ROWS.schema)
    table.append(ROWS)
    table.append(batch(4))
    assert rows(cat.load_table(ident).scan().to_arrow()) == rows([ROWS, batch(4)])


# --- 2. DuckDB -------------------------------------------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path):
    """DuckDB with httpfs, avro and iceberg loaded from their PyPI wheels (no extension download)."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_httpfs
    import duckdb_extension_iceberg

    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext"), "autoinstall_known_extensions": False})
    for module, name in [(duckdb_extension_httpfs, "httpfs"), (duckdb_extension_avro, "avro"),
                         (duckdb_extension_iceberg, "iceberg")]:
        [extension] = pathlib.Path(module.__file__).parent.rglob(f"{name}.duckdb_extension")
        con.execute(f"INSTALL '{extension}'")
        con.execute(f"LOAD {name}")
    yield con
    con.close()


def attach(duck, lg, user):
    """The catalog as `user`: a bearer-token secret and ATTACH with vended credentials (DuckDB's default mode)."""
    duck.execute(f"CREATE SECRET lakegate_{user} (TYPE iceberg, TOKEN '{token(lg, user)}')")
    duck.execute(
        f"ATTACH '{WAREHOUSE}' AS lake (TYPE iceberg, ENDPOINT '{base_url(lg)}', SECRET lakegate_{user}, "
        "ACCESS_DELEGATION_MODE 'vended_credentials')"
    )


def test_duckdb_reads_a_pyiceberg_table_and_inserts_rows_that_pyiceberg_reads_back(lg, duck):
    cat, ident, _ = new_table(lg, prefix="duck")
    attach(duck, lg, "alice")
    name = f"lake.scratch.{ident[1]}"

    got = duck.execute(f"SELECT id, name, amount FROM {name} ORDER BY id").fetchall()
    assert got == [(r["id"], r["name"], r["amount"]) for r in rows(ROWS)]

    duck.execute(f"INSERT INTO {name} VALUES (10, 'duck', 10.5), (11, 'db', 11.5)")
    got = duck.execute(f"SELECT id, name FROM {name} WHERE id >= 10 ORDER BY id").fetchall()
    assert got == [(10, "duck"), (11, "db")]

    table = cat.load_table(ident)
    assert len(table.snapshots()) == 2
    assert [r["id"] for r in rows(table.scan().to_arrow())] == [1, 2, 3, 10, 11]
    # DuckDB lists the table too.
    shown = duck.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake' "
                         "AND table_schema = 'scratch'").fetchall()
    assert (ident[1],) in shown


def test_duckdb_creates_a_table_in_scratch_that_pyiceberg_reads(lg, duck):
    # DuckDB creates with stage-create, then commits with assert-create and the updates of a new table, among them
    # set-location to the location the catalog assigned (which must therefore be accepted as a no-op).
    attach(duck, lg, "alice")
    name = unique("duckmade")
    duck.execute(f"CREATE TABLE lake.scratch.{name} (id BIGINT, name VARCHAR)")
    duck.execute(f"INSERT INTO lake.scratch.{name} VALUES (1, 'one'), (2, 'two')")
    assert duck.execute(f"SELECT count(*) FROM lake.scratch.{name}").fetchall() == [(2,)]

    table = catalog(lg, "alice").load_table(("scratch", name))
    assert LOCATION.fullmatch(table.location()), table.location()
    assert sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "name": "one"}, {"id": 2, "name": "two"}]


def test_duckdb_as_dave_sees_no_table(lg, duck):
    _, ident, _ = new_table(lg, prefix="hidden")
    import duckdb

    attach(duck, lg, "dave")
    assert duck.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake'").fetchall() == []
    with pytest.raises(duckdb.CatalogException):
        duck.execute(f"SELECT * FROM lake.scratch.{ident[1]}")


# --- 3. Concurrent commits -------------------------------------------------------------------------------------------


def staged_append(table, data):
    """The CommitTableRequest PyIceberg would send to append `data` (its files written, nothing committed), as JSON."""
    from pyiceberg.table import CommitTableRequest, TableIdentifier
    from pyiceberg.table.update import AssertTableUUID

    tx = table.transaction()
    tx.append(data)
    # PyIceberg keeps what it would commit in the transaction; it adds assert-table-uuid when it commits.
    requirements = tx._requirements + (AssertTableUUID(uuid=table.metadata.table_uuid),)
    request = CommitTableRequest(identifier=TableIdentifier(namespace=list(table.name()[:-1]), name=table.name()[-1]),
                                 requirements=requirements, updates=tx._updates)
    body = json.loads(request.model_dump_json())
    kinds = {r["type"] for r in body["requirements"]}
    assert {"assert-ref-snapshot-id", "assert-table-uuid"} <= kinds, body["requirements"]
    return body


def test_two_concurrent_commits_on_one_parent_one_lands_one_is_409_and_the_loser_retries(lg):
    cat, ident, table = new_table(lg, prefix="race")
    parent = table.current_snapshot().snapshot_id
    first, second = cat.load_table(ident), cat.load_table(ident)
    additions = [batch(100, 101), batch(200, 201)]
    bodies = [staged_append(first, additions[0]), staged_append(second, additions[1])]
    for body in bodies:
        [ref] = [r for r in body["requirements"] if r["type"] == "assert-ref-snapshot-id"]
        assert ref["ref"] == "main" and ref["snapshot-id"] == parent

    start = threading.Barrier(2)

    def commit(body):
        start.wait()
        return rest(lg, "alice", "POST", f"namespaces/scratch/tables/{ident[1]}", json=body)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(commit, bodies))
    assert sorted(r.status_code for r in responses) == [200, 409], [show(r) for r in responses]
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    loser = 1 - winner
    assert_error(responses[loser], 409, "CommitFailedException")
    committed = responses[winner].json()
    assert committed["metadata-location"] and committed["metadata"]["current-snapshot-id"] != parent

    # The loser changed nothing: one new snapshot, the winner's, on top of the common parent.
    now = cat.load_table(ident)
    assert now.current_snapshot().snapshot_id == committed["metadata"]["current-snapshot-id"]
    assert now.current_snapshot().parent_snapshot_id == parent
    assert len(now.snapshots()) == 2
    assert rows(now.scan().to_arrow()) == rows([ROWS, additions[winner]])

    # The loser refreshes and commits again on the new parent.
    retry = cat.load_table(ident)
    retry.append(additions[loser])
    final = cat.load_table(ident)
    assert len(final.snapshots()) == 3
    assert rows(final.scan().to_arrow()) == rows([ROWS, *additions])


def test_concurrent_pyiceberg_appends_retry_and_lose_nothing(lg):
    cat, ident, _ = new_table(lg, prefix="appends")
    writers = [cat.load_table(ident) for _ in range(3)]
    additions = [batch(10 * (i + 1), 10 * (i + 1) + 1) for i in range(len(writers))]
    start = threading.Barrier(len(writers))

    def append(i):
        start.wait()
        writers[i].append(additions[i])  # PyIceberg refreshes and retries on a 409

    with ThreadPoolExecutor(len(writers)) as pool:
        list(pool.map(append, range(len(writers))))
    final = cat.load_table(ident)
    assert len(final.snapshots()) == 1 + len(writers)
    assert rows(final.scan().to_arrow()) == rows([ROWS, *additions])


def test_a_failed_requirement_is_409_and_changes_nothing(lg):
    cat, ident, table = new_table(lg, prefix="stale")
    path = f"namespaces/scratch/tables/{ident[1]}"
    old = table.current_snapshot().snapshot_id
    table.append(batch(9))
    before = rest(lg, "alice", "GET", path).json()

    stale = {"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": old}],
             "updates": [{"action": "set-properties", "updates": {"owner": "stale"}}]}
    assert_error(rest(lg, "alice", "POST", path, json=stale), 409, "CommitFailedException")
    wrong_uuid = {"requirements": [{"type": "assert-table-uuid", "uuid": str(uuid.uuid4())}],
                  "updates": [{"action": "set-properties", "updates": {"owner": "wrong"}}]}
    assert_error(rest(lg, "alice", "POST", path, json=wrong_uuid), 409, "CommitFailedException")
    exists = {"requirements": [{"type": "assert-create"}],
              "updates": [{"action": "set-properties", "updates": {"owner": "again"}}]}
    assert_error(rest(lg, "alice", "POST", path, json=exists), 409, "CommitFailedException")

    after = rest(lg, "alice", "GET", path).json()
    assert after["metadata-location"] == before["metadata-location"]
    assert "owner" not in after["metadata"].get("properties", {})

    current = after["metadata"]["current-snapshot-id"]
    fresh = {"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": current},
                              {"type": "assert-table-uuid", "uuid": after["metadata"]["table-uuid"]}],
             "updates": [{"action": "set-properties", "updates": {"owner": "alice"}}]}
    r = rest(lg, "alice", "POST", path, json=fresh)
    assert r.status_code == 200, show(r)
    assert r.json()["metadata"]["properties"]["owner"] == "alice"
    assert cat.load_table(ident).properties["owner"] == "alice"


# --- 4. Rights -------------------------------------------------------------------------------------------------------


def test_bob_sees_and_reads_alices_scratch_table(lg):
    _, ident, _ = new_table(lg, prefix="shared")
    bob = catalog(lg, "bob")
    assert ("scratch",) in bob.list_namespaces()
    assert ident in bob.list_tables("scratch")
    assert rows(bob.load_table(ident).scan().to_arrow()) == rows(ROWS)


def test_dave_lists_nothing_finds_nothing_and_creates_nothing(lg):
    _, ident, _ = new_table(lg, prefix="secret")
    r = rest(lg, "dave", "GET", "namespaces")
    assert r.status_code == 200, show(r)
    assert r.json()["namespaces"] == []

    # Existence is not revealed: a table he may not see is one that does not exist.
    assert_error(rest(lg, "dave", "GET", f"namespaces/scratch/tables/{ident[1]}", headers=VENDED),
                 404, "NoSuchTableException")
    missing = rest(lg, "dave", "GET", "namespaces/scratch/tables/no_such_table", headers=VENDED)
    assert_error(missing, 404, "NoSuchTableException")
    assert rest(lg, "dave", "HEAD", f"namespaces/scratch/tables/{ident[1]}").status_code == 404
    r = rest(lg, "dave", "GET", "namespaces/scratch/tables")
    assert r.status_code in (200, 403, 404), show(r)
    if r.status_code == 200:
        assert r.json()["identifiers"] == []

    assert_error(create_raw(lg, "dave", "scratch", unique("dave")), 403, "ForbiddenException")
    drop = rest(lg, "dave", "DELETE", f"namespaces/scratch/tables/{ident[1]}")
    assert drop.status_code in (403, 404), show(drop)
    assert rest(lg, "alice", "HEAD", f"namespaces/scratch/tables/{ident[1]}").status_code == 204


def test_carol_works_in_hr_but_not_in_scratch_and_alice_not_in_hr(lg):
    from pyiceberg.exceptions import ForbiddenError

    carol = catalog(lg, "carol")
    namespaces = carol.list_namespaces()
    assert ("hr",) in namespaces and ("scratch",) not in namespaces
    with pytest.raises(ForbiddenError):
        carol.create_table(("scratch", unique("carol")), schema=ROWS.schema)
    assert_error(create_raw(lg, "carol", "scratch", unique("carol")), 403, "ForbiddenException")

    # carol creates, writes, reads and drops in hr with vended credentials.
    ident = ("hr", unique("payroll"))
    table = carol.create_table(ident, schema=ROWS.schema)
    assert LOCATION.fullmatch(table.location())["ns"] == "hr"
    table.append(ROWS)
    assert rows(carol.load_table(ident).scan().to_arrow()) == rows(ROWS)

    alice = catalog(lg, "alice")
    with pytest.raises(ForbiddenError):
        alice.create_table(("hr", unique("alice")), schema=ROWS.schema)
    assert_error(create_raw(lg, "alice", "hr", unique("alice")), 403, "ForbiddenException")
    # Nor may she move her table there, or see carol's.
    _, mine, _ = new_table(lg, prefix="mine")
    r = rest(lg, "alice", "POST", "tables/rename", json={
        "source": {"namespace": ["scratch"], "name": mine[1]}, "destination": {"namespace": ["hr"], "name": mine[1]}})
    assert_error(r, 403, "ForbiddenException")
    r = rest(lg, "alice", "GET", "namespaces/hr/tables")
    if r.status_code == 200:
        assert {"namespace": ["hr"], "name": ident[1]} not in r.json()["identifiers"]
    # and carol does not see alice's scratch table.
    r = rest(lg, "carol", "GET", f"namespaces/scratch/tables/{mine[1]}", headers=VENDED)
    assert_error(r, 404, "NoSuchTableException")

    carol.drop_table(ident)
    assert not carol.table_exists(ident)


def test_locations_are_lakegates_a_foreign_one_is_400(lg):
    for location in ["s3://lake/hr/stolen", "s3://lake/iceberg/hr/x", "s3://other/x", "file:///tmp/x"]:
        name = unique("foreign")
        assert_error(create_raw(lg, "alice", "scratch", name, location=location), 400, "BadRequestException")
        assert rest(lg, "alice", "HEAD", f"namespaces/scratch/tables/{name}").status_code == 404

    _, ident, table = new_table(lg, prefix="moved")
    path = f"namespaces/scratch/tables/{ident[1]}"
    r = rest(lg, "alice", "POST", path, json={"requirements": [], "updates": [
        {"action": "set-location", "location": "s3://lake/hr/elsewhere"}]})
    assert_error(r, 400, "BadRequestException")
    assert rest(lg, "alice", "GET", path).json()["metadata"]["location"] == table.location()


def test_namespaces_single_level_and_managed_by_policy(lg):
    r = rest(lg, "alice", "GET", "namespaces/scratch")
    assert r.status_code == 200, show(r)
    assert r.json()["namespace"] == ["scratch"]
    assert rest(lg, "alice", "HEAD", "namespaces/scratch").status_code == 204
    assert rest(lg, "dave", "HEAD", "namespaces/scratch").status_code in (403, 404)

    assert_error(rest(lg, "alice", "GET", "namespaces/scratch%1Fdeeper"), 400, "BadRequestException")
    assert_error(rest(lg, "alice", "POST", "namespaces", json={"namespace": ["a", "b"]}), 400, "BadRequestException")
    # No demo policy lets anyone create, drop or change namespaces.
    assert_error(rest(lg, "alice", "POST", "namespaces", json={"namespace": [unique("ns")]}), 403, "ForbiddenException")
    assert_error(rest(lg, "alice", "DELETE", "namespaces/scratch"), 403, "ForbiddenException")
    r = rest(lg, "alice", "POST", "namespaces/scratch/properties", json={"updates": {"owner": "alice"}, "removals": []})
    assert_error(r, 403, "ForbiddenException")
    assert_error(rest(lg, "alice", "GET", "namespaces/nowhere/tables"), 404, "NoSuchNamespaceException")


def test_registering_a_metadata_file_needs_a_register_permit(lg):
    _, ident, table = new_table(lg, prefix="reg")
    r = rest(lg, "alice", "POST", "namespaces/scratch/register",
             json={"name": unique("copy"), "metadata-location": table.metadata_location})
    assert_error(r, 403, "ForbiddenException")  # the demo grants no RegisterTable


def test_a_missing_or_invalid_token_is_401(lg):
    for bearer in [None, "not-a-token", token(lg, "alice")[:-4] + "AAAA"]:
        for path in ["namespaces", "namespaces/scratch/tables", f"namespaces/scratch/tables/{unique('x')}"]:
            assert_error(rest(lg, None, "GET", path, bearer=bearer), 401, "NotAuthorizedException")
        r = rest(lg, None, "GET", "config", bearer=bearer, params={"warehouse": WAREHOUSE})
        assert_error(r, 401, "NotAuthorizedException")


def test_unknown_warehouse_and_bad_requests_have_the_spec_form(lg):
    r = rest(lg, "alice", "GET", "config", params={"warehouse": "elsewhere"})
    assert r.status_code in (400, 404), show(r)
    assert r.json()["error"]["code"] == r.status_code
    r = rest(lg, "alice", "POST", "namespaces/scratch/tables", data=b"{not json")
    assert_error(r, 400, "BadRequestException")
    r = rest(lg, "alice", "POST", "namespaces/scratch/tables", json={"schema": {"type": "struct", "fields": []}})
    assert_error(r, 400, "BadRequestException")  # no name
    name = unique("twice")
    assert create_raw(lg, "alice", "scratch", name).status_code == 200
    assert_error(create_raw(lg, "alice", "scratch", name), 409, "AlreadyExistsException")


# --- 5. Audit --------------------------------------------------------------------------------------------------------


def events_of(lg, request_id):
    return [e for e in lg.audit_events() if e.get("request_id") == request_id]


def test_a_load_with_vending_is_audited_twice_and_a_refusal_is_a_deny(lg):
    _, ident, _ = new_table(lg, prefix="audited")
    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}", headers=VENDED)
    assert r.status_code == 200, show(r)
    rid = r.headers["x-request-id"]
    events = eventually("the load's audit records", lambda: (
        lambda es: es if {e["action"] for e in es} >= {"iceberg:LoadTable", "iceberg:VendCredentials"} else None
    )(events_of(lg, rid)))
    by_action = {e["action"]: e for e in events}
    load, vend = by_action["iceberg:LoadTable"], by_action["iceberg:VendCredentials"]
    for e in (load, vend):
        assert e["decision"] == "allow" and e["principal"]["subject"] == "alice", e
        assert f"scratch.{ident[1]}" in e["resource"], e
    assert len([e for e in events if e["action"] == "iceberg:LoadTable"]) == 1
    # The secret never reaches the log.
    secret = r.json()["config"]["s3.secret-access-key"]
    assert all(secret not in json.dumps(e) for e in events)

    r = create_raw(lg, "dave", "scratch", unique("refused"))
    assert r.status_code == 403, show(r)
    [deny] = eventually("the refusal's audit record", lambda: events_of(lg, r.headers["x-request-id"]))
    assert deny["action"] == "iceberg:CreateTable" and deny["decision"] == "deny", deny
    assert deny["principal"]["subject"] == "dave" and "scratch" in deny["resource"], deny

    r = rest(lg, None, "GET", "namespaces", bearer="not-a-token")
    assert r.status_code == 401, show(r)
    [bad] = eventually("the bad token's audit record", lambda: events_of(lg, r.headers["x-request-id"]))
    assert bad["action"] == "iceberg:ListNamespaces" and bad["decision"] == "deny" and bad["principal"] is None, bad


def test_every_catalog_call_is_one_audit_record_named_after_its_operation(lg):
    name = unique("ops")
    renamed = unique("ops2")
    calls = [
        ("iceberg:ListNamespaces", "GET", "namespaces", None),
        ("iceberg:LoadNamespace", "GET", "namespaces/scratch", None),
        ("iceberg:CreateTable", "POST", "namespaces/scratch/tables", "create"),
        ("iceberg:ListTables", "GET", "namespaces/scratch/tables", None),
        ("iceberg:LoadTable", "GET", f"namespaces/scratch/tables/{name}", None),
        ("iceberg:CommitTable", "POST", f"namespaces/scratch/tables/{name}",
         {"requirements": [], "updates": [{"action": "set-properties", "updates": {"k": "v"}}]}),
        ("iceberg:LoadCredentials", "GET", f"namespaces/scratch/tables/{name}/credentials", None),
        ("iceberg:RenameTable", "POST", "tables/rename", {"source": {"namespace": ["scratch"], "name": name},
                                                          "destination": {"namespace": ["scratch"], "name": renamed}}),
        ("iceberg:DropTable", "DELETE", f"namespaces/scratch/tables/{renamed}", None),
        ("iceberg:CreateNamespace", "POST", "namespaces", {"namespace": [unique("ns")]}),
        ("iceberg:UpdateNamespaceProperties", "POST", "namespaces/scratch/properties", {"updates": {"a": "b"}}),
        ("iceberg:DropNamespace", "DELETE", "namespaces/scratch", None),
        ("iceberg:RegisterTable", "POST", "namespaces/scratch/register",
         {"name": unique("reg"), "metadata-location": "s3://lake/iceberg/scratch/x/metadata/00000.metadata.json"}),
    ]
    ids = {}
    for action, method, path, body in calls:
        if body == "create":
            r = create_raw(lg, "alice", "scratch", name)
        else:
            r = rest(lg, "alice", method, path, json=body) if body else rest(lg, "alice", method, path)
        assert r.status_code < 500, show(r)
        ids[action] = (r.headers["x-request-id"], r.status_code)

    def recorded():
        found = {}
        for action, (rid, _) in ids.items():
            records = [e for e in events_of(lg, rid) if e["action"] != "iceberg:VendCredentials"]
            if not records:
                return None
            found[action] = records
        return found

    found = eventually("a record for every call", recorded)
    wrong = {action: [(e["action"], e["decision"]) for e in records] for action, records in found.items()
             if [(e["action"], e["decision"]) for e in records] != [(action, "allow" if ids[action][1] < 400 else "deny")]}
    assert not wrong, wrong
    assert all(e["principal"]["subject"] == "alice" for records in found.values() for e in records)


# --- 6. What vended credentials reach --------------------------------------------------------------------------------


def s3_client(lg, config):
    return boto3.client(
        "s3", endpoint_url=config["s3.endpoint"], region_name=config["s3.region"],
        aws_access_key_id=config["s3.access-key-id"], aws_secret_access_key=config["s3.secret-access-key"],
        aws_session_token=config["s3.session-token"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def access_denied(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"] == "AccessDenied"


def test_vended_credentials_reach_only_the_tables_location(lg):
    _, ident, table = new_table(lg, prefix="scoped")
    _, other_ident, other = new_table(lg, user="bob", prefix="neighbour")
    bucket, prefix = split_location(table.location())
    _, other_prefix = split_location(other.location())
    assert bucket == "lake"

    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}", headers=VENDED)
    assert r.status_code == 200, show(r)
    config = r.json()["config"]
    s3 = s3_client(lg, config)

    # The table's own files: listed, read, and (alice may commit) written.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    data = [k for k in keys if k.startswith(prefix + "data/") and k.endswith(".parquet")]
    assert data and any(k.startswith(prefix + "metadata/") for k in keys), keys
    assert s3.get_object(Bucket=bucket, Key=data[0])["Body"].read()[:4] == b"PAR1"
    s3.put_object(Bucket=bucket, Key=prefix + "data/probe.txt", Body=b"x")
    s3.delete_object(Bucket=bucket, Key=prefix + "data/probe.txt")

    # Nothing else: the neighbouring table (which alice may read through the catalog), its parent, hr.
    other_metadata = other.metadata_location.removeprefix("s3://lake/")
    assert access_denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=other_prefix))
    assert access_denied(lambda: s3.get_object(Bucket=bucket, Key=other_metadata))
    assert access_denied(lambda: s3.put_object(Bucket=bucket, Key=other_prefix + "data/evil.parquet", Body=b"x"))
    assert access_denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="iceberg/scratch/"))
    assert access_denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="hr/"))
    assert access_denied(lambda: s3.get_object(Bucket=bucket, Key="sales/2024/q1.parquet"))
    # A prefix that merely starts with the location's name is another location.
    assert access_denied(lambda: s3.put_object(Bucket=bucket, Key=prefix.rstrip("/") + "x/evil", Body=b"x"))

    # The credentials endpoint vends the same scope.
    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}/credentials")
    assert r.status_code == 200, show(r)
    [credential] = r.json()["storage-credentials"]
    assert credential["prefix"].rstrip("/") == table.location().rstrip("/")
    s3 = s3_client(lg, credential["config"])
    assert s3.get_object(Bucket=bucket, Key=data[0])["Body"].read()[:4] == b"PAR1"
    assert access_denied(lambda: s3.get_object(Bucket=bucket, Key=other_metadata))


# --- Policies the demo does not have: read-only and fine-grained access -----------------------------------------------


DAVE_READS_SCRATCH = """
@id("test-dave-reads-scratch")
permit (principal == User::"dave", action == Action::"SelectTable", resource in Database::"scratch");
"""

BOB_RESTRICTED_IN_SCRATCH = """
@id("test-bob-sees-small-ids")
@row_filter("id < 100")
permit (principal == User::"bob", action == Action::"RestrictRows", resource in Database::"scratch");
"""


def test_read_only_and_fine_grained_principals(start_lakegate):
    from pyiceberg.exceptions import ForbiddenError

    lg = start_lakegate()
    _, ident, table = new_table(lg, prefix="policy")
    path = f"namespaces/scratch/tables/{ident[1]}"
    (lg.policy_dir / "test-iceberg.cedar").write_text(DAVE_READS_SCRATCH + BOB_RESTRICTED_IN_SCRATCH)
    eventually("the new policies", lambda: rest(lg, "dave", "GET", path).status_code == 200)

    # dave may read the whole table but not commit: read-only credentials.
    r = rest(lg, "dave", "GET", path, headers=VENDED)
    assert r.status_code == 200, show(r)
    s3 = s3_client(lg, r.json()["config"])
    bucket, prefix = split_location(table.location())
    data = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "data/")["Contents"]]
    assert s3.get_object(Bucket=bucket, Key=data[0])["Body"].read()[:4] == b"PAR1"
    assert access_denied(lambda: s3.put_object(Bucket=bucket, Key=prefix + "data/dave.parquet", Body=b"x"))
    assert access_denied(lambda: s3.delete_object(Bucket=bucket, Key=data[0]))
    commit = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"by": "dave"}}]}
    assert_error(rest(lg, "dave", "POST", path, json=commit), 403, "ForbiddenException")
    assert rows(catalog(lg, "dave").load_table(ident).scan().to_arrow()) == rows(ROWS)

    # bob sees only some rows: he may load the metadata, but raw credentials would bypass the filter.
    r = rest(lg, "bob", "GET", path)
    assert r.status_code == 200 and not r.json().get("storage-credentials"), show(r)
    error = assert_error(rest(lg, "bob", "GET", path, headers=VENDED), 403, "ForbiddenException")
    assert "SQL gateway" in error["message"], error
    assert_error(rest(lg, "bob", "GET", path + "/credentials"), 403, "ForbiddenException")
    with pytest.raises(ForbiddenError, match="SQL gateway"):
        catalog(lg, "bob").load_table(ident)
    vend = eventually("bob's refused vending", lambda: next(
        (e for e in reversed(lg.audit_events())
         if e["action"] == "iceberg:VendCredentials" and e["principal"] and e["principal"]["subject"] == "bob"), None))
    assert vend["decision"] == "deny" and ident[1] in vend["resource"], vend


def test_keys_as_long_as_s3_allows_are_kept_whole_or_in_parts(lg):
    # Iceberg's keys grow with namespace, table and partition names (`<location>/data/<partition>/<uuid>.parquet`):
    # the embedded store keeps keys up to S3's 1024 bytes, put whole or in parts, and lists them.
    _, ident, table = new_table(lg, prefix="longkeys")
    bucket, prefix = split_location(table.location())
    r = rest(lg, "alice", "GET", f"namespaces/scratch/tables/{ident[1]}", headers=VENDED)
    assert r.status_code == 200, show(r)
    s3 = s3_client(lg, r.json()["config"])
    base = prefix + "data/long/"
    whole = base + "k" * (1000 - len(base))
    parts = base + "p" * 300
    assert len(whole.encode()) == 1000
    s3.put_object(Bucket=bucket, Key=whole, Body=b"whole")
    upload = s3.create_multipart_upload(Bucket=bucket, Key=parts)["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    assert [u["Key"] for u in listed.get("Uploads", [])] == [parts], listed
    etag = s3.upload_part(Bucket=bucket, Key=parts, UploadId=upload, PartNumber=1, Body=b"in parts")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key=parts, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key=whole)["Body"].read() == b"whole"
    assert s3.get_object(Bucket=bucket, Key=parts)["Body"].read() == b"in parts"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]]
    assert keys == [whole, parts], keys
    assert not s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads")


def test_catalog_state_in_postgresql_survives_a_restart_and_keeps_commits_atomic(start_lakegate, postgres, tmp_path):
    # Replicas share the catalog through PostgreSQL: a table committed by one server is there for the next one
    # (same store, new process), and two commits from the same version still make exactly one winner.
    postgres.psql("create database iceberg_state")
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=iceberg_state")
    store = tmp_path / "shared-store"
    env = {"LAKEGATE__ICEBERG__POSTGRES": dsn, "LAKEGATE__S3__BACKEND": f'{{kind = "embedded", dir = "{store}"}}'}
    first = start_lakegate(env=env)
    _, ident, table = new_table(first, prefix="pg")
    assert rows(table.scan().to_arrow()) == rows(ROWS)
    first.stop()

    second = start_lakegate(env=env)
    cat = catalog(second, "alice")
    assert ident in cat.list_tables("scratch")
    one, two = cat.load_table(ident), cat.load_table(ident)
    one.append(batch(10))
    r = rest(second, "alice", "POST", f"namespaces/scratch/tables/{ident[1]}", json={
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main",
                          "snapshot-id": two.metadata.current_snapshot_id}],
        "updates": [{"action": "set-properties", "updates": {"stale": "yes"}}],
    })
    assert_error(r, 409, "CommitFailedException")
    assert rows(cat.load_table(ident).scan().to_arrow()) == rows([ROWS, batch(10)])
    assert "stale" not in cat.load_table(ident).properties


# --- The same table through the SQL gateway ----------------------------------------------------------------------

PAYROLL_CATALOG = """
[[tables]]
name = "hr.payroll"
backend = "embedded"
format = "iceberg"
columns = [
  { name = "id", type = "bigint" },
  { name = "name", type = "text" },
  { name = "department", type = "text" },
  { name = "salary", type = "bigint" },
]
"""

PAYROLL_POLICY = """
@id("payroll-analysts-sales-rows")
@row_filter("department = 'sales'")
permit (
  principal in Group::"analysts",
  action == Action::"SelectTable",
  resource in Table::"hr.payroll"
);
"""


def payroll(*rows):
    return pa.table({
        "id": pa.array([r[0] for r in rows], pa.int64()),
        "name": pa.array([r[1] for r in rows], pa.string()),
        "department": pa.array([r[2] for r in rows], pa.string()),
        "salary": pa.array([r[3] for r in rows], pa.int64()),
    })


def sql(lg, user, query):
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=lg.sql_port, dbname="lakegate", user=user,
                         password=token(lg, user), sslmode="disable", connect_timeout=10) as c:
        return c.execute(query).fetchall()


def test_a_row_filtered_user_is_refused_the_files_and_reads_the_same_iceberg_table_governed_through_sql(
        start_lakegate, tmp_path):
    import psycopg
    from pyiceberg.exceptions import ForbiddenError

    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "catalog.toml").write_text((policies / "catalog.toml").read_text() + PAYROLL_CATALOG)
    (policies / "payroll.cedar").write_text(PAYROLL_POLICY)
    lg = start_lakegate(env={"LAKEGATE__POLICY__DIR": str(policies)})

    # HR writes the table with PyIceberg, with read-write credentials for its files.
    hr = catalog(lg, "carol")
    table = hr.create_table(("hr", "payroll"), schema=payroll((1, "a", "x", 1)).schema)
    table.append(payroll((1, "Ada", "engineering", 100), (2, "Chen", "sales", 80), (3, "Dana", "sales", 85)))

    # Alice is under a row filter: no credentials for the raw files, a pointer to the SQL gateway instead...
    with pytest.raises(ForbiddenError, match="SQL gateway"):
        catalog(lg, "alice").load_table(("hr", "payroll"))
    # ...where the same table, read from the files its current snapshot lists, shows her only the sales rows.
    assert sql(lg, "alice", "select id, name from hr.payroll order by id") == [(2, "Chen"), (3, "Dana")]
    assert sql(lg, "carol", "select count(*), sum(salary) from hr.payroll") == [(3, 265)]

    # A commit is seen by the very next statement.
    hr.load_table(("hr", "payroll")).append(payroll((4, "Eve", "sales", 90)))
    assert sql(lg, "alice", "select id from hr.payroll order by id") == [(2,), (3,), (4,)]
    assert sql(lg, "carol", "select count(*) from hr.payroll") == [(4,)]

    # Dave may read none of it, by either road.
    with pytest.raises(psycopg.errors.Error):
        sql(lg, "dave", "select * from hr.payroll")
    assert_error(rest(lg, "dave", "GET", "namespaces/hr/tables/payroll", headers=VENDED), 404, "NoSuchTableException")


# --- The demo world ----------------------------------------------------------------------------------------------


def test_demo_orders_send_alice_to_the_sql_gateway_where_she_reads_the_same_files_filtered(lg):
    import psycopg
    from pyiceberg.exceptions import ForbiddenError

    r = rest(lg, "alice", "GET", "namespaces/sales/tables")
    assert r.status_code == 200, show(r)
    assert {"namespace": ["sales"], "name": "orders"} in r.json()["identifiers"]
    # Metadata, yes; the raw files, no: a row filter and a mask apply to her.
    assert rest(lg, "alice", "GET", "namespaces/sales/tables/orders").status_code == 200
    error = assert_error(rest(lg, "alice", "GET", "namespaces/sales/tables/orders", headers=VENDED),
                         403, "ForbiddenException")
    assert "SQL gateway" in error["message"]
    with pytest.raises(ForbiddenError, match="SQL gateway"):
        catalog(lg, "alice").load_table(("sales", "orders"))
    with psycopg.connect(host="127.0.0.1", port=lg.sql_port, dbname="lakegate", user="alice",
                         password=token(lg, "alice"), sslmode="disable", connect_timeout=10) as c:
        got = c.execute("select region, card_number from sales.orders").fetchall()
    assert len(got) == 12 and {region for region, _ in got} == {"EU"}
    assert all(re.fullmatch(r"\*{12}\d{4}", card) for _, card in got)


def test_demo_employees_are_scanned_whole_by_carol_with_pyiceberg(lg):
    table = catalog(lg, "carol").load_table(("hr", "employees"))
    got = table.scan().to_arrow()
    assert got.num_rows == 8
    assert {"id", "name", "department", "salary", "ssn"} <= set(got.column_names)
    assert "101-11-1111" in got.column("ssn").to_pylist()
    # dave still sees nothing of it.
    assert_error(rest(lg, "dave", "GET", "namespaces/hr/tables/employees", headers=VENDED), 404, "NoSuchTableException")


# --- Identity propagation ----------------------------------------------------------------------------------------

NOTEBOOK_SECRET = "notebook-secret-for-iceberg-tests"


def test_a_notebook_acting_for_alice_works_as_alice_and_every_record_names_the_chain(start_lakegate):
    import hashlib

    digest = hashlib.sha256(NOTEBOOK_SECRET.encode()).hexdigest()
    lg = start_lakegate(config=f'[token_service]\nclients = [{{ id = "notebook", secret_sha256 = "{digest}" }}]\n')
    r = requests.post(f"{lg.control_url}/oauth2/token", auth=("notebook", NOTEBOOK_SECRET), timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": demo_token(lg, "alice"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    })
    assert r.status_code == 200, r.text
    delegated = r.json()["access_token"]

    from pyiceberg.catalog.rest import RestCatalog

    cat = RestCatalog("lakegate", uri=base_url(lg), warehouse=WAREHOUSE, token=delegated)
    ident = ("scratch", unique("nb"))
    cat.create_table(ident, schema=ROWS.schema).append(ROWS)
    assert rows(cat.load_table(ident).scan().to_arrow()) == rows(ROWS)

    # The catalog's records, the vending and the S3 requests made with the vended credentials all name alice
    # and the notebook acting for her.
    def records(action):
        return [e for e in lg.audit_events() if e["action"].startswith(action) and ident[1] in e["resource"]]

    # ("s3:" is every S3 request pyarrow made with the vended credentials: multipart uploads, reads.)
    for action in ("iceberg:CreateTable", "iceberg:LoadTable", "iceberg:VendCredentials", "s3:"):
        events = eventually(f"{action} records", lambda a=action: records(a))
        for e in events:
            assert e["principal"]["subject"] == "alice", e
            assert "notebook" in json.dumps(e["actors"]), e
