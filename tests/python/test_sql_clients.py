"""Real clients against the SQL gateway on the demo world (embedded engine).

Each client connects as alice (analyst, EU), bob (analyst, US), carol (hr) and dave (no permit):
alice sees EU orders only with card numbers masked to their last 4 digits, bob US orders, carol all of hr
and nothing of sales, dave nothing at all. Clients: psql, pgJDBC (Debian's jar, a small Java program
compiled by javac), psycopg 3, SQLAlchemy's inspector and the trino client.
"""

import asyncio
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import asyncpg
import boto3
import botocore
import psycopg
import pytest
import requests
import sqlalchemy
import trino

from conftest import DEMO_USERS, demo_token, eventually
from sql_support import jdbc_classes  # noqa: F401  (a fixture: the compiled pgJDBC test program)

ROOT = Path(__file__).resolve().parents[2]
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


@pytest.fixture
def gw(lakegate):
    """The shared server on the demo world (embedded engine)."""
    return lakegate


def token(gw, user):
    return demo_token(gw, user)


# ---------------------------------------------------------------- psql


def psql(gw, user, sql, password=None):
    env = dict(os.environ, PGPASSWORD=password or token(gw, user), PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={gw.sql_port} dbname=lakegate user={user} sslmode=disable"
    return subprocess.run(
        ["psql", dsn, "-X", "-A", "-t", "-F", "|", "-c", sql], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("user,region", [("alice", "EU"), ("bob", "US")])
def test_psql_analysts_see_only_their_region(gw, user, region):
    r = psql(gw, user, "select region, count(*) from sales.orders group by region")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"{region}|12"]


def test_psql_card_numbers_show_only_the_last_four_digits(gw):
    r = psql(gw, "alice", "select card_number from sales.orders limit 3")
    assert r.returncode == 0, r.stderr
    cards = r.stdout.split()
    assert len(cards) == 3
    assert all(re.fullmatch(r"\*{12}\d{4}", c) for c in cards), cards


def test_psql_naming_a_hidden_column_is_error_42501(gw):
    env = dict(os.environ, PGPASSWORD=token(gw, "alice"))
    dsn = f"host=127.0.0.1 port={gw.sql_port} dbname=lakegate user=alice sslmode=disable"
    r = subprocess.run(
        ["psql", dsn, "-X", "-v", "VERBOSITY=verbose", "-c", "select ssn from hr.employees"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "42501" in r.stderr and "ssn" in r.stderr, r.stderr


def test_psql_hr_sees_salaries_and_no_sales(gw):
    r = psql(gw, "carol", "select count(*), count(ssn), sum(salary) from hr.employees")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8|8|625000.00"
    r = psql(gw, "carol", "select * from sales.orders")
    assert r.returncode != 0 and "permission denied" in r.stderr


def test_psql_dave_is_denied_everything(gw):
    for sql in ["select * from sales.orders", "select name from hr.employees"]:
        r = psql(gw, "dave", sql)
        assert r.returncode != 0 and "permission denied" in r.stderr, r.stderr
        assert r.stdout == ""


def test_psql_dt_lists_only_visible_tables(gw):
    r = psql(gw, "alice", r"\dt *.*")
    assert r.returncode == 0, r.stderr
    assert "sales|orders|table" in r.stdout and "hr|employees|table" in r.stdout
    r = psql(gw, "carol", r"\dt *.*")
    assert "hr|employees" in r.stdout and "orders" not in r.stdout
    r = psql(gw, "dave", r"\dt *.*")
    assert r.returncode == 0 and r.stdout.strip() == ""


def test_psql_describe_lists_only_visible_columns(gw):
    r = psql(gw, "alice", r"\d hr.employees")
    assert r.returncode == 0, r.stderr
    assert "department" in r.stdout
    assert "salary" not in r.stdout and "ssn" not in r.stdout


def test_psql_a_token_for_someone_else_is_refused(gw):
    r = psql(gw, "bob", "select 1", password=token(gw, "alice"))
    assert r.returncode != 0 and "does not match" in r.stderr


def test_psql_a_bad_token_fails_password_authentication(gw):
    env = dict(os.environ, PGPASSWORD="not-a-token")
    dsn = f"host=127.0.0.1 port={gw.sql_port} dbname=lakegate user=alice sslmode=disable"
    r = subprocess.run(["psql", dsn, "-X", "-v", "VERBOSITY=verbose", "-c", "select 1"], env=env,
                       capture_output=True, text=True, timeout=60)
    # psql does not print a connection error's SQLSTATE; "password authentication failed" is 28P01's text.
    assert r.returncode != 0 and "FATAL:  password authentication failed" in r.stderr, r.stderr


def test_psql_signs_in_with_a_token_longer_than_10000_bytes(gw):
    # An identity provider's token for someone in hundreds of groups: alice's own groups and attributes, and more.
    groups, attrs = DEMO_USERS["alice"]
    long = gw.token("alice", [*groups, *(f"team-{i:04}-readers" for i in range(450))], attrs)
    assert 10_000 < len(long) < 16_384, len(long)
    r = psql(gw, "alice", "select region, count(*) from sales.orders group by region", password=long)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["EU|12"]


def test_psql_a_password_past_what_postgresql_reads_is_refused_with_its_reason(gw):
    # Up to PostgreSQL's 65,535 bytes a password is read and is not a token (over identity.max_token_bytes)...
    r = psql(gw, "alice", "select 1", password="x" * 20_000)
    assert r.returncode != 0 and "FATAL:  password authentication failed" in r.stderr, r.stderr
    # ...and past them it is refused at its header.
    r = psql(gw, "alice", "select 1", password="x" * 70_000)
    assert r.returncode != 0 and "FATAL:  invalid message length" in r.stderr, r.stderr
    assert r.stdout == ""


# ---------------------------------------------------------------- psycopg 3


def connect(gw, user):
    return psycopg.connect(host="127.0.0.1", port=gw.sql_port, dbname="lakegate", user=user,
                           password=token(gw, user), sslmode="disable", connect_timeout=10)


@pytest.mark.parametrize("user,region", [("alice", "EU"), ("bob", "US")])
def test_psycopg_analysts_see_their_region_with_masked_cards(gw, user, region):
    with connect(gw, user) as c:
        rows = c.execute("select region, card_number, amount from sales.orders where amount > %s", (0,)).fetchall()
    assert rows and {r[0] for r in rows} == {region}
    assert all(r[1].startswith("*" * 12) and len(r[1]) == 16 for r in rows)
    assert all(isinstance(r[2], Decimal) for r in rows)


def test_psycopg_server_side_prepared_statements_stay_governed(gw):
    with connect(gw, "alice") as c:
        for _ in range(3):
            rows = c.execute("select count(*) from sales.orders where customer <> %s", ("nobody",), prepare=True).fetchall()
            assert rows == [(12,)]


def test_psycopg_statements_it_prepared_by_itself_are_dropped_at_a_rollback(gw):
    """psycopg 3 prepares a statement on the server from its fifth run in a transaction (`prepare_threshold`);
    at a rollback it forgets them all and sends `DEALLOCATE ALL`, as at every checkin to SQLAlchemy's pool."""
    with connect(gw, "alice") as c:
        for _ in range(3):
            for _ in range(6):
                rows = c.execute("select count(*) from sales.orders where customer <> %s", ("nobody",)).fetchall()
                assert rows == [(12,)]
            c.rollback()


def test_psycopg_deallocate_drops_prepared_statements_by_name_or_all(gw):
    sqlstate = psycopg.pq.DiagnosticField.SQLSTATE
    with connect(gw, "alice") as c:
        c.autocommit = True
        pg = c.pgconn
        for name in (b"first", b"second"):
            assert pg.prepare(name, b"select count(*) from sales.orders").status == psycopg.pq.ExecStatus.COMMAND_OK
        c.execute("DEALLOCATE first")
        assert pg.exec_prepared(b"first", []).error_field(sqlstate) == b"26000"
        assert pg.exec_prepared(b"second", []).get_value(0, 0) == b"12"
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            c.execute("DEALLOCATE first")
        c.execute("DEALLOCATE ALL")
        assert pg.exec_prepared(b"second", []).error_field(sqlstate) == b"26000"
        # The names are free again, as on PostgreSQL.
        assert pg.prepare(b"first", b"select 1").status == psycopg.pq.ExecStatus.COMMAND_OK


def test_discard_all_between_a_pools_clients_resets_settings_and_drops_prepared_statements(gw):
    """pgbouncer and pgpool send `DISCARD ALL` when a client gives its connection back: the next client must find
    neither the last one's settings nor its prepared statements, as on PostgreSQL. `DISCARD PLANS`, `TEMP` and
    `SEQUENCES` drop nothing a gateway session has."""
    sqlstate = psycopg.pq.DiagnosticField.SQLSTATE
    ok = psycopg.pq.ExecStatus.COMMAND_OK
    with connect(gw, "alice") as c:
        c.autocommit = True
        pg = c.pgconn
        first = c.execute("SHOW application_name").fetchone()
        for discard in (lambda: c.execute("DISCARD ALL"), lambda: pg.exec_(b"DISCARD ALL")):  # extended, simple
            c.execute("SET application_name = 'the last client'")
            assert pg.prepare(b"last", b"select count(*) from sales.orders").status == ok
            for harmless in ("DISCARD PLANS", "DISCARD TEMP", "DISCARD SEQUENCES"):
                assert c.execute(harmless).statusmessage == harmless
            assert c.execute("SHOW application_name").fetchone() == ("the last client",)
            assert pg.exec_prepared(b"last", []).get_value(0, 0) == b"12"

            discard()
            assert c.execute("SHOW application_name").fetchone() == first
            assert pg.exec_prepared(b"last", []).error_field(sqlstate) == b"26000"

        # Not inside a transaction block, which it could not undo.
        c.execute("SET application_name = 'in a block'")
        c.execute("BEGIN")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            c.execute("DISCARD ALL")
        c.execute("ROLLBACK")
        assert c.execute("SHOW application_name").fetchone() == ("in a block",)


def test_psycopg_a_large_result_is_sent_as_it_is_produced(gw):
    """The extended protocol (psycopg, pgJDBC) must not hold a result whole before its first row: a client that
    reads one row of 2,985,984 and leaves is recorded as having received far fewer rows than the result holds."""
    marker = "stream_probe_" + os.urandom(6).hex()
    joins = ", ".join(f"sales.orders o{i}" for i in range(2, 7))
    total = 12 ** 6
    conn = connect(gw, "alice")
    rows = conn.cursor().stream(f"select o1.order_id as {marker} from sales.orders o1, {joins}")
    assert next(rows)
    conn.pgconn.finish()  # leave mid-result, as a client that crashes does

    def recorded():
        found = [e for e in gw.audit_events() if e.get("sql") and marker in e["sql"]["original"]]
        return found[0] if found else None

    event = eventually("the statement's audit record", recorded, timeout=60)
    assert event["sql"]["rows"] < total, event["sql"]


def test_psycopg_hr_reads_ssn_and_dave_gets_insufficient_privilege(gw):
    with connect(gw, "carol") as c:
        assert c.execute("select ssn from hr.employees where id = %s", (1,)).fetchall() == [("101-11-1111",)]
    with connect(gw, "dave") as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select * from hr.employees")


# ---------------------------------------------------------------- SQLAlchemy


def engine(gw, user):
    return sqlalchemy.create_engine(
        f"postgresql+psycopg://{user}:{token(gw, user)}@127.0.0.1:{gw.sql_port}/lakegate?sslmode=disable"
    )


def test_sqlalchemy_inspector_shows_only_visible_tables_and_columns(gw):
    insp = sqlalchemy.inspect(engine(gw, "alice"))
    assert insp.get_table_names(schema="sales") == ["orders"]
    assert [c["name"] for c in insp.get_columns("employees", schema="hr")] == ["id", "name", "department"]
    insp = sqlalchemy.inspect(engine(gw, "carol"))
    assert insp.get_table_names(schema="sales") == []
    assert [c["name"] for c in insp.get_columns("employees", schema="hr")] == ["id", "name", "department", "salary", "ssn"]
    insp = sqlalchemy.inspect(engine(gw, "dave"))
    assert insp.get_table_names(schema="hr") == []


def test_sqlalchemy_core_query_is_governed(gw):
    with engine(gw, "bob").connect() as conn:
        rows = conn.execute(sqlalchemy.text("select distinct region from sales.orders")).fetchall()
    assert rows == [("US",)]


def test_sqlalchemy_pool_pre_ping_lends_the_same_connection_again(gw):
    # The ping (`SELECT 1`) before each checkout must succeed: a failed one makes SQLAlchemy drop the connection
    # and open another, which the connect count would show.
    eng = sqlalchemy.create_engine(
        f"postgresql+psycopg://bob:{token(gw, 'bob')}@127.0.0.1:{gw.sql_port}/lakegate?sslmode=disable",
        pool_pre_ping=True, pool_size=1, max_overflow=0,
    )
    opened = []
    sqlalchemy.event.listen(eng, "connect", lambda dbapi_connection, record: opened.append(record))
    # Six runs a checkout: from the fifth run in a transaction psycopg prepares the query on the server, and the
    # checkin's rollback then sends `DEALLOCATE ALL`, which must succeed too.
    query = sqlalchemy.text("select distinct region from sales.orders where amount > :least")
    for _ in range(3):
        with eng.connect() as conn:
            for _ in range(6):
                assert conn.execute(query, {"least": 0}).fetchall() == [("US",)]
    assert len(opened) == 1
    eng.dispose()


# ---------------------------------------------------------------- asyncpg


def test_asyncpg_pool_resets_and_lends_the_same_connection_again(gw):
    """asyncpg resets a connection at every release to its pool: `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL;` to a server that says it is PostgreSQL. A failed reset closes the connection."""
    async def lend():
        opened = []

        async def init(conn):
            opened.append(conn)

        pool = await asyncpg.create_pool(host="127.0.0.1", port=gw.sql_port, database="lakegate", user="bob",
                                         password=token(gw, "bob"), ssl=False, min_size=1, max_size=1, init=init)
        for _ in range(3):
            async with pool.acquire() as conn:
                rows = await conn.fetch("select distinct region from sales.orders where amount > $1", Decimal(0))
                assert [tuple(r) for r in rows] == [("US",)]
                await conn.execute("SET application_name = 'lent'")
            async with pool.acquire() as conn:
                # RESET ALL took the setting back.
                assert await conn.fetchval("SHOW application_name") != "lent"
        await pool.close()
        return len(opened)

    assert asyncio.run(lend()) == 1


def test_asyncpg_catalog_query_with_plain_parameters_encodes_them_as_what_they_are_compared_with(gw):
    """A hand-written catalog lookup with plain `$n` parameters: asyncpg encodes each in binary by the type the
    server describes, so `c.oid = $1` must be described as a number and `attnum > $2` as a small one, as
    PostgreSQL infers them; a parameter described as text would make asyncpg refuse the integer."""
    async def look():
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.sql_port, database="lakegate", user="bob",
                                     password=token(gw, "bob"), ssl=False)
        oid = await conn.fetchval(
            "select c.oid from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = $1 and c.relname = $2", "sales", "orders")
        names = await conn.fetch(
            "select attname from pg_catalog.pg_attribute where attrelid = $1 and attnum > $2 order by attnum",
            oid, 2)
        await conn.close()
        return oid, [r["attname"] for r in names]

    oid, names = asyncio.run(look())
    assert isinstance(oid, int)
    assert names == ["region", "amount", "card_number"]


def test_sqlalchemy_asyncio_over_asyncpg_queries_and_reflects_the_governed_view(gw):
    """SQLAlchemy's asyncio engine over asyncpg: asyncpg asks the server for the type of every parameter and sends
    it in binary, and SQLAlchemy's reflection casts each of its parameters (`$11::INTEGER`)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def walk():
        eng = create_async_engine(
            f"postgresql+asyncpg://bob:{token(gw, 'bob')}@127.0.0.1:{gw.sql_port}/lakegate?ssl=disable",
            pool_size=1, max_overflow=0,
        )
        opened = []
        sqlalchemy.event.listen(eng.sync_engine, "connect", lambda dbapi_connection, record: opened.append(record))
        query = sqlalchemy.text("select distinct region from sales.orders where amount > :least")
        seen = []
        for _ in range(3):
            async with eng.connect() as conn:
                rows = (await conn.execute(query, {"least": 0})).fetchall()
                columns = await conn.run_sync(
                    lambda c: [col["name"] for col in sqlalchemy.inspect(c).get_columns("orders", schema="sales")])
                seen.append((rows, columns))
        await eng.dispose()
        return seen, len(opened)

    seen, opened = asyncio.run(walk())
    columns = ["order_id", "customer", "region", "amount", "card_number"]
    assert seen == [([("US",)], columns)] * 3
    assert opened == 1


# ---------------------------------------------------------------- pgJDBC




def jdbc(gw, classes, user, *args):
    cmd = ["java", "-cp", f"{JDBC_JAR}:{classes}", "LakegateJdbc",
           f"jdbc:postgresql://127.0.0.1:{gw.sql_port}/lakegate", user, token(gw, user), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("user,region", [("alice", "EU"), ("bob", "US")])
def test_jdbc_analysts_see_their_region(gw, jdbc_classes, user, region):
    r = jdbc(gw, jdbc_classes, user, "query", "select region, count(*) from sales.orders group by region")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split("\n")[0] == f"{region}\t12"


def test_jdbc_prepared_statement_with_binary_results_keeps_the_mask(gw, jdbc_classes):
    r = jdbc(gw, jdbc_classes, "alice", "prepared",
             "select order_id, amount, card_number from sales.orders where order_id = ?", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    order_id, amount, card = r.stdout.strip().split("\t")
    assert order_id == "3" and Decimal(amount) > 0 and re.fullmatch(r"\*{12}\d{4}", card)
    r = jdbc(gw, jdbc_classes, "alice", "prepared",
             "select order_id from sales.orders where order_id = ?", "2")
    assert r.returncode == 0 and r.stdout.strip() == ""  # order 2 is a US order


def test_jdbc_metadata_lists_only_visible_tables_and_columns(gw, jdbc_classes):
    r = jdbc(gw, jdbc_classes, "alice", "meta")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TABLE\tsales\torders" in r.stdout
    assert "COLUMN\thr\temployees\tname\ttext" in r.stdout
    assert "ssn" not in r.stdout and "salary" not in r.stdout
    r = jdbc(gw, jdbc_classes, "dave", "meta")
    assert r.returncode == 0 and r.stdout.strip() == ""


def test_jdbc_carol_and_dave(gw, jdbc_classes):
    r = jdbc(gw, jdbc_classes, "carol", "query", "select sum(salary) from hr.employees")
    assert r.returncode == 0 and r.stdout.strip() == "625000.00", r.stdout
    r = jdbc(gw, jdbc_classes, "dave", "query", "select * from sales.orders")
    assert r.returncode == 3 and r.stdout.startswith("SQLSTATE 42501"), r.stdout


# ---------------------------------------------------------------- trino


def trino_cursor(gw, user, claimed_user="someone-else"):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token(gw, user)
    # X-Trino-User (from `user`) is ignored: the token decides who runs the query.
    conn = trino.dbapi.connect(host="127.0.0.1", port=gw.control_port, user=claimed_user, http_scheme="http",
                               http_session=session)
    return conn.cursor()


@pytest.mark.parametrize("user,region", [("alice", "EU"), ("bob", "US")])
def test_trino_analysts_see_their_region_and_pages_cover_every_row(gw, user, region):
    cur = trino_cursor(gw, user, claimed_user="carol")
    cur.execute("select order_id, region, card_number from sales.orders")
    rows = cur.fetchall()
    assert len(rows) == 12 and {r[1] for r in rows} == {region}
    assert all(r[2].startswith("*" * 12) for r in rows)


def test_trino_errors_carry_permission_denied(gw):
    cur = trino_cursor(gw, "alice")
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        cur.execute("select ssn from hr.employees")
        cur.fetchall()
    assert e.value.error_name == "PERMISSION_DENIED"
    cur = trino_cursor(gw, "dave")
    with pytest.raises(trino.exceptions.TrinoUserError):
        cur.execute("select * from hr.employees")
        cur.fetchall()


def test_trino_hr_reads_employees(gw):
    cur = trino_cursor(gw, "carol")
    cur.execute("select count(ssn) from hr.employees")
    assert cur.fetchall() == [[8]]


# ---------------------------------------------------------------- full-table credentials and audit


def test_full_table_credentials_only_for_unrestricted_principals(gw):
    url = f"http://127.0.0.1:{gw.control_port}/v1/tables/hr.employees/credentials"
    r = requests.post(url, headers={"Authorization": "Bearer " + token(gw, "carol")}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["location"].startswith("s3://lake/iceberg/hr/employees-") and body["permission"] == "READ"
    assert body["credentials"]["accessKeyId"] and body["credentials"]["sessionToken"]
    # They read the table's files (the demo table is an Iceberg table in the embedded store), and nothing else.
    creds = body["credentials"]
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{gw.s3_port}", region_name="us-east-1",
                      aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                      aws_session_token=creds["sessionToken"])
    prefix = body["location"].removeprefix("s3://lake/").rstrip("*")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix=prefix)["Contents"]]
    parquet = [k for k in keys if k.endswith(".parquet")]
    assert parquet and s3.get_object(Bucket="lake", Key=parquet[0])["Body"].read()[:4] == b"PAR1"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.get_object(Bucket="lake", Key="sales/2024/q1.parquet")
    r = requests.post(url, headers={"Authorization": "Bearer " + token(gw, "alice")}, timeout=30)
    assert r.status_code == 403 and "SQL gateway" in r.json()["detail"]


def test_every_query_is_audited_with_original_and_rewritten_sql(gw):
    marker = "audit_probe_4711"
    r = psql(gw, "alice", f"select count(*) as {marker} from sales.orders")
    assert r.returncode == 0, r.stderr
    # The audit sink writes asynchronously (the event was committed before the rows were sent, flushed after).
    e = eventually("the audit event of the query", lambda: next(
        (e for e in reversed(gw.audit_events())
         if e.get("sql") and marker in e["sql"]["original"] and e["sql"].get("rows") is not None), None))
    assert e["principal"]["subject"] == "alice" and e["decision"] == "allow"
    assert "'EU'" in e["sql"]["rewritten"] and e["sql"]["tables"] == ["sales.orders"]
    assert e["sql"]["rows"] == 1
    assert "sales.orders.card_number" in e["sql"]["masks"]


# ---------------------------------------------------------------- TLS


def test_psql_over_tls_verifies_the_server_and_plaintext_is_refused(start_lakegate, tmp_path):
    subprocess.run([str(ROOT / "certs/gen-dev.sh"), str(tmp_path)], check=True, capture_output=True, timeout=60)
    lg = start_lakegate(env={
        "LAKEGATE__SQL__TLS": f'{{cert = "{tmp_path}/server.crt", key = "{tmp_path}/server.key"}}',
        "LAKEGATE__SQL__ALLOW_PLAINTEXT_PASSWORD": "false",
    })
    env = dict(os.environ, PGPASSWORD=demo_token(lg, "alice"))
    base = f"host=127.0.0.1 port={lg.sql_port} dbname=lakegate user=alice"
    ok = subprocess.run(["psql", f"{base} sslmode=verify-full sslrootcert={tmp_path}/ca.crt", "-X", "-A", "-t",
                         "-c", "select count(*) from sales.orders"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "12", ok.stderr
    plain = subprocess.run(["psql", f"{base} sslmode=disable", "-X", "-c", "select 1"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "requires TLS" in plain.stderr, plain.stderr
