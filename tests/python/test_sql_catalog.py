"""The catalog SQL tools read when they connect and browse, governed, on both backends.

Every test runs twice: on the embedded engine (the demo warehouse) and with both demo tables moved to a real
PostgreSQL. Catalog queries are answered by the gateway from the principal's governed view of the catalog, so
what a tool lists must be the same on both; data reads (pandas) go to the backend. The users: alice and bob
(analysts: sales.orders with cards masked, hr.employees without salary and SSN), carol (hr: all of
hr.employees, nothing of sales) and dave (nothing at all).
"""

import json
import os
import re
import subprocess
import time

import pandas
import pyodbc
import pytest
import requests
import sqlalchemy
import trino

from conftest import DEMO_USERS, eventually
from sql_support import (JDBC_JAR, USERS, VISIBLE, assert_nothing_hidden, gw, jdbc_classes,  # noqa: F401
                         on_postgres, token, visible_schemas, visible_tables)

# ---------------------------------------------------------------- psql meta-commands


def psql(gw, user, command, *flags):
    env = dict(os.environ, PGPASSWORD=token(gw, user), PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={gw.sql_port} dbname=lakegate user={user} sslmode=disable"
    return subprocess.run(["psql", dsn, "-X", "-A", "-t", "-F", "|", *flags, "-c", command], env=env,
                          capture_output=True, text=True, timeout=60)


def psql_ok(gw, user, command):
    """The rows psql shows for `command` (tuples only, no titles or footers), each split into its fields."""
    r = psql(gw, user, command)
    assert r.returncode == 0 and "ERROR" not in r.stderr, f"{command}: {r.stderr}"
    assert_nothing_hidden(user, r.stdout)
    return [line.split("|") for line in r.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("user", USERS)
def test_psql_dt_lists_exactly_the_visible_tables(gw, user):
    rows = psql_ok(gw, user, r"\dt *.*")
    assert sorted(f"{schema}.{name}" for schema, name, *_ in rows) == visible_tables(user)
    assert all(kind == "table" for _, _, kind, *_ in rows)


@pytest.mark.parametrize("user", USERS)
def test_psql_dn_lists_the_schemas_of_visible_tables(gw, user):
    rows = psql_ok(gw, user, r"\dn")
    assert sorted(row[0] for row in rows if row[0] != "public") == visible_schemas(user)


@pytest.mark.parametrize("user", USERS)
def test_psql_d_describes_only_visible_columns_and_refuses_hidden_tables(gw, user):
    for table, columns in VISIBLE[user].items():
        rows = psql_ok(gw, user, rf"\d+ {table}")
        assert [row[0] for row in rows] == columns
    for table in {"sales.orders", "hr.employees"} - set(VISIBLE[user]):
        r = psql(gw, user, rf"\d {table}")
        assert "Did not find any relation" in r.stderr, r.stderr
        assert_nothing_hidden(user, r.stdout)


@pytest.mark.parametrize("user", USERS)
def test_psql_d_lists_visible_relations(gw, user):
    rows = psql_ok(gw, user, r"\d")
    assert sorted(f"{schema}.{name}" for schema, name, *_ in rows) == visible_tables(user)


@pytest.mark.parametrize("command", [r"\dv", r"\df", r"\l", r"\du", r"\dT", r"\di *.*", r"\dm", r"\ds", r"\dx"])
def test_psql_other_listings_answer_without_error(gw, command):
    for user in USERS:
        psql_ok(gw, user, command)


def test_psql_l_lists_the_gateway_database(gw):
    rows = psql_ok(gw, "alice", r"\l")
    assert [row[0] for row in rows] == ["lakegate"]


def test_psql_du_shows_the_caller_only(gw):
    for user in USERS:
        assert [row[0] for row in psql_ok(gw, user, r"\du")] == [user]


def test_psql_conninfo_names_the_gateway(gw):
    r = psql(gw, "alice", r"\conninfo")
    assert r.returncode == 0 and 'database "lakegate" as user "alice"' in r.stdout, r.stderr


def test_psql_a_system_catalog_the_gateway_does_not_emulate_is_an_unknown_relation(gw):
    r = psql(gw, "alice", "select * from pg_catalog.pg_stat_activity", "-v", "VERBOSITY=verbose")
    assert r.returncode != 0
    assert 'ERROR:  42P01: relation "pg_catalog.pg_stat_activity" does not exist' in r.stderr, r.stderr


@pytest.mark.parametrize("sql", [
    "select n.nspname, (select count(*) from sales.orders) from pg_catalog.pg_namespace n",
    "select * from pg_catalog.pg_class c join hr.employees e on true",
    "select ssn from information_schema.tables, hr.employees",
])
def test_psql_a_catalog_query_cannot_read_data(gw, sql):
    r = psql(gw, "carol", sql, "-v", "VERBOSITY=verbose")
    assert r.returncode != 0 and "ERROR:  0A000: " in r.stderr, r.stderr
    assert r.stdout == ""


def test_psql_a_refused_catalog_query_is_audited(gw):
    marker = "probe_catalog_4712"
    r = psql(gw, "alice", f"select relname as {marker} from pg_catalog.pg_class, sales.orders")
    assert r.returncode != 0
    event = eventually("the refusal's audit event", lambda: next(
        (e for e in reversed(gw.audit_events()) if marker in json.dumps(e.get("sql") or {})), None))
    assert event["principal"]["subject"] == "alice" and event["decision"] != "allow"
    assert "0A000" in json.dumps(event), event


def test_psql_a_catalog_query_answered_empty_is_audited_too(gw):
    # Constraints are a catalog the gateway keeps empty; the answer is known without planning, but the query is
    # still a decision about what alice may see, and recorded as one.
    marker = "probe_constraints_5821"
    out = psql_ok(gw, "alice", f"select c.conname as {marker} from pg_catalog.pg_constraint c "
                               "join pg_catalog.pg_class r on r.oid = c.conrelid")
    assert out == []
    event = eventually("the catalog query's audit event", lambda: next(
        (e for e in reversed(gw.audit_events()) if marker in json.dumps(e)), None))
    assert event["principal"]["subject"] == "alice" and event["decision"] == "allow", event


# ---------------------------------------------------------------- SQLAlchemy inspector and pandas


def engine(gw, user):
    return sqlalchemy.create_engine(
        f"postgresql+psycopg://{user}:{token(gw, user)}@127.0.0.1:{gw.sql_port}/lakegate?sslmode=disable"
    )


@pytest.mark.parametrize("user", USERS)
def test_sqlalchemy_inspector_lists_only_visible_schemas_tables_and_columns(gw, user):
    insp = sqlalchemy.inspect(engine(gw, user))
    assert sorted(s for s in insp.get_schema_names() if s != "public") == visible_schemas(user)
    for schema in ("sales", "hr"):
        listed = [f"{schema}.{t}" for t in insp.get_table_names(schema=schema)]
        assert listed == [t for t in visible_tables(user) if t.startswith(schema + ".")]
        assert insp.get_view_names(schema=schema) == []
        assert insp.get_materialized_view_names(schema=schema) == []
    for table, columns in VISIBLE[user].items():
        schema, name = table.split(".")
        assert [c["name"] for c in insp.get_columns(name, schema=schema)] == columns
        assert insp.has_table(name, schema=schema)
    for table in {"sales.orders", "hr.employees"} - set(VISIBLE[user]):
        schema, name = table.split(".")
        assert not insp.has_table(name, schema=schema)
        with pytest.raises(sqlalchemy.exc.NoSuchTableError):
            insp.get_columns(name, schema=schema)
    assert not insp.has_table("secret_bonuses", schema="hr")


def test_sqlalchemy_inspectors_walking_one_connection_again_see_each_table_as_the_first_did(gw):
    """A tool's second walk over one connection, as at a refresh: the same catalog texts again, with other
    tables' names bound in between. The session answers repeats from what it kept over the same view, so each
    table must still get its own columns, in its own order."""
    with engine(gw, "alice").connect() as conn:
        def walk():
            insp = sqlalchemy.inspect(conn)  # a new inspector: nothing cached on the client's side
            return {f"{schema}.{name}": [c["name"] for c in insp.get_columns(name, schema=schema)]
                    for schema in ("sales", "hr") for name in insp.get_table_names(schema=schema)}
        first = walk()
        assert first == VISIBLE["alice"]
        for _ in range(2):
            assert walk() == first


def test_sqlalchemy_inspector_reports_column_types(gw):
    insp = sqlalchemy.inspect(engine(gw, "carol"))
    types = {c["name"]: c["type"] for c in insp.get_columns("employees", schema="hr")}
    assert isinstance(types["id"], sqlalchemy.BIGINT)
    assert isinstance(types["salary"], sqlalchemy.NUMERIC) and (types["salary"].precision, types["salary"].scale) == (12, 2)
    assert isinstance(types["name"], sqlalchemy.TEXT)


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_sqlalchemy_inspector_constraints_indexes_and_comments_are_empty_not_errors(gw, user):
    insp = sqlalchemy.inspect(engine(gw, user))
    for table in VISIBLE[user]:
        schema, name = table.split(".")
        assert insp.get_pk_constraint(name, schema=schema)["constrained_columns"] == []
        assert insp.get_foreign_keys(name, schema=schema) == []
        assert insp.get_indexes(name, schema=schema) == []
        assert insp.get_unique_constraints(name, schema=schema) == []
        assert insp.get_check_constraints(name, schema=schema) == []
        assert insp.get_table_comment(name, schema=schema) == {"text": None}
    assert insp.get_sequence_names(schema="sales") == []
    assert insp.get_enums(schema="sales") == []


def test_pandas_read_sql_table_reads_the_governed_view(gw):
    orders = pandas.read_sql_table("orders", engine(gw, "alice"), schema="sales")
    assert list(orders.columns) == VISIBLE["alice"]["sales.orders"]
    assert len(orders) > 0 and set(orders["region"]) == {"EU"}
    assert all(re.fullmatch(r"\*{12}\d{4}", c) for c in orders["card_number"])
    employees = pandas.read_sql_table("employees", engine(gw, "alice"), schema="hr")
    assert list(employees.columns) == VISIBLE["alice"]["hr.employees"]
    employees = pandas.read_sql_table("employees", engine(gw, "carol"), schema="hr")
    assert list(employees.columns) == VISIBLE["carol"]["hr.employees"] and employees["ssn"].notna().all()


@pytest.mark.parametrize("user,table", [("carol", "orders"), ("dave", "orders"), ("dave", "employees")])
def test_pandas_read_sql_table_of_a_hidden_table_finds_no_table(gw, user, table):
    schema = "sales" if table == "orders" else "hr"
    with pytest.raises(ValueError, match="not found"):
        pandas.read_sql_table(table, engine(gw, user), schema=schema)


# ---------------------------------------------------------------- pgJDBC DatabaseMetaData


def jdbc_browse(gw, classes, user):
    """DatabaseMetaData walked as an editor does: {method label: [row fields]}; fails on any failed method."""
    cmd = ["java", "-cp", f"{JDBC_JAR}:{classes}", "LakegateJdbc",
           f"jdbc:postgresql://127.0.0.1:{gw.sql_port}/lakegate", user, token(gw, user), "browse"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "FAILED" not in r.stdout, r.stdout + r.stderr
    assert_nothing_hidden(user, r.stdout)
    rows = {}
    for line in r.stdout.splitlines():
        label, *fields = line.split("\t")
        rows.setdefault(label, []).append(fields)
    return rows


@pytest.mark.parametrize("user", USERS)
def test_jdbc_metadata_walk_shows_exactly_what_the_user_may_see(gw, jdbc_classes, user):
    rows = jdbc_browse(gw, jdbc_classes, user)
    assert rows["USER"] == [[user]] and rows["CATALOG"] == [["lakegate"]]
    schemas = [s for (s,) in rows["SCHEMA"] if s not in ("pg_catalog", "public", "information_schema")]
    assert sorted(schemas) == visible_schemas(user)
    assert sorted(f"{s}.{t}" for s, t, kind, _ in rows.get("TABLE", [])) == visible_tables(user)
    assert all(kind == "TABLE" for _, _, kind, _ in rows.get("TABLE", []))
    columns = {}
    for schema, table, column, _type, position, nullable in rows.get("COLUMN", []):
        columns.setdefault(f"{schema}.{table}", []).append(column)
    assert columns == VISIBLE[user]
    # Lakegate's catalog has no keys, indexes, views or functions: the calls answer, with no rows.
    for label in ("VIEW", "PK", "IMPORTED", "EXPORTED", "INDEX", "FUNCTION", "PROCEDURE"):
        assert label not in rows, rows.get(label)


def test_jdbc_type_info_lists_the_types_the_gateway_carries(gw, jdbc_classes):
    types = {name for name, _ in jdbc_browse(gw, jdbc_classes, "alice")["TYPEINFO"]}
    assert {"int8", "numeric", "text", "varchar", "bool", "date", "timestamp"} <= types


# ---------------------------------------------------------------- Trino: SHOW, information_schema, SQLAlchemy


def trino_session(gw, user):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token(gw, user)
    return session


def trino_rows(gw, user, sql, params=None, schema="sales", legacy=None):
    conn = trino.dbapi.connect(host="127.0.0.1", port=gw.control_port, user=user, http_scheme="http",
                               http_session=trino_session(gw, user), catalog="lakegate", schema=schema,
                               legacy_prepared_statements=legacy)
    cur = conn.cursor()
    if params is None:
        cur.execute(sql)
    else:
        cur.execute(sql, params)
    return cur.fetchall()


def trino_engine(gw, user):
    return sqlalchemy.create_engine(f"trino://{user}@127.0.0.1:{gw.control_port}/lakegate",
                                    connect_args={"http_scheme": "http", "http_session": trino_session(gw, user)})


def test_trino_queries_left_open_are_bounded_per_user_and_in_all_and_a_cancel_frees_a_place(start_lakegate):
    # One row a page: every query below has more rows than its first page, so it stays open for the client.
    lg = start_lakegate(env={"LAKEGATE__SQL__TRINO_PAGE_ROWS": "1"})
    headers = {"X-Trino-Catalog": "lakegate", "X-Trino-Schema": "sales"}

    def analyst(sub):
        """A session of an analyst of the EU, as alice is."""
        session = requests.Session()
        session.headers.update(headers)
        session.headers.update({"X-Trino-User": sub, "Authorization": "Bearer " + lg.token(sub, *DEMO_USERS["alice"])})
        return session

    def start_query(session):
        return session.post(f"{lg.control_url}/v1/statement", data="select order_id from sales.orders", timeout=60)

    def open_queries(session, n):
        uris = []
        for _ in range(n):
            answer = start_query(session)
            assert answer.status_code == 200, answer.text
            uris.append(answer.json()["nextUri"])
        return uris

    # One user holds at most 64 of the places.
    alice = analyst("alice")
    alices = open_queries(alice, 64)
    refused = start_query(alice)
    assert refused.status_code == 503 and "too many open queries of yours" in refused.text, refused.text
    # Another user's query is not theirs to fetch or cancel.
    mallory = analyst("mallory")
    assert mallory.get(alices[0], timeout=60).status_code == 404
    assert mallory.delete(alices[0], timeout=60).status_code == 404
    # 256 in all.
    for sub in ("erin", "frank", "grace"):
        open_queries(analyst(sub), 64)
    refused = start_query(mallory)
    assert refused.status_code == 503 and "too many open queries;" in refused.text, refused.text
    # A cancel gives its place back.
    assert alice.delete(alices.pop(), timeout=60).status_code == 204
    assert start_query(mallory).status_code == 200


def start_orders_query(gw, user):
    """The first page of `user`'s query of the order ids, as the Trino front answers it."""
    return trino_session(gw, user).post(f"{gw.control_url}/v1/statement", timeout=60,
                                        headers={"X-Trino-Catalog": "lakegate", "X-Trino-Schema": "sales"},
                                        data="select order_id from sales.orders")


def test_trino_a_result_read_ahead_to_its_end_gives_its_backend_connection_back_before_its_client_fetches_it(
        tmp_path, postgres):
    # On PostgreSQL an open query's rows stream from a backend connection. The Trino front has one here (a pool of
    # two, shared among the connection threads and the front's own), which a statement waits a second for.
    lg = on_postgres(tmp_path, postgres, env={"LAKEGATE__SQL__TRINO_PAGE_ROWS": "1"},
                     backend="pool_wait_timeout_ms = 1000")
    try:
        # alice's result is two rows, a page each: the second is read ahead, which ends her query's backend work.
        held = start_orders_query(lg, "alice")
        assert held.status_code == 200 and held.json()["data"] == [[1]], held.text
        # So bob's query has the connection while alice has not yet fetched her second page.
        answered = start_orders_query(lg, "bob")
        assert answered.status_code == 200 and answered.json()["data"] == [[2]], answered.text
        rest, page = [], held.json()
        while "nextUri" in page:
            page = trino_session(lg, "alice").get(page["nextUri"], timeout=60).json()
            rest += page.get("data", [])
        assert rest == [[3]] and page["stats"]["state"] == "FINISHED", page
        events = lg.audit_events()
    finally:
        lg.stop()
    # alice's record counts the rows she was given, once she has them all.
    alices = [e for e in events if e["action"] == "sql:Select" and e["principal"]["subject"] == "alice"
              and e.get("stage") != "decision"]
    assert [e["sql"]["rows"] for e in alices] == [2], alices
    assert [(e["outcome"] or {}).get("incomplete") for e in alices] == [None], alices


def test_trino_a_query_its_client_is_behind_on_goes_to_disk_so_that_another_users_query_gets_its_connection(
        tmp_path, postgres):
    # alice's result is 20,002 rows, far more than the read-ahead (256 KiB), and she stops after its first page:
    # her query holds the Trino front's one connection. Once bob's query waits for it, the rest of her rows are
    # written to disk and the connection is his.
    lg = on_postgres(tmp_path, postgres, backend="pool_wait_timeout_ms = 10000")
    postgres.psql("INSERT INTO sales.orders SELECT i, 'Initech', 'EU', 1.00, '4000000000000009' "
                  "FROM generate_series(10, 20009) AS i")
    try:
        held = start_orders_query(lg, "alice")
        assert held.status_code == 200 and len(held.json()["data"]) == 1000, held.text
        answered = start_orders_query(lg, "bob")
        assert answered.status_code == 200 and answered.json().get("data") == [[2]], answered.text
        # alice, back, is given every one of her rows, once.
        ids, page = [row[0] for row in held.json()["data"]], held.json()
        while "nextUri" in page:
            page = trino_session(lg, "alice").get(page["nextUri"], timeout=60).json()
            ids += [row[0] for row in page.get("data", [])]
        assert page["stats"]["state"] == "FINISHED", page
        assert sorted(ids) == [1, 3, *range(10, 20010)]
        events = lg.audit_events()
    finally:
        lg.stop()
        postgres.psql("DELETE FROM sales.orders WHERE order_id >= 10")
    alices = [e for e in events if e["action"] == "sql:Select" and e["principal"]["subject"] == "alice"
              and e.get("stage") != "decision"]
    assert [e["sql"]["rows"] for e in alices] == [20002], alices


def test_trino_queries_their_client_abandoned_give_their_backend_connection_back(tmp_path, postgres):
    # A read-ahead of one row and nothing written to disk (`trino_spill_bytes = 0`): a query whose rest is more
    # than the read-ahead holds its connection.
    env = {"LAKEGATE__SQL__TRINO_PAGE_ROWS": "1", "LAKEGATE__SQL__TRINO_CLIENT_TIMEOUT_MS": "3000",
           "LAKEGATE__SQL__TRINO_READ_AHEAD_BYTES": "1", "LAKEGATE__SQL__TRINO_SPILL_BYTES": "0"}
    lg = on_postgres(tmp_path, postgres, env=env, backend="pool_wait_timeout_ms = 1000")
    try:
        def start_query(user):
            return start_orders_query(lg, user)

        # alice's query has a row left after its first page, and she never comes back for it.
        held = start_query("alice")
        assert held.status_code == 200 and held.json()["data"] == [[1]], held.text
        # Until her client's time is up, bob's query waits for the connection, and is refused.
        waited = start_query("bob")
        assert waited.json()["error"]["sqlState"] == "53300", waited.text
        assert waited.json()["error"]["errorType"] == "INSUFFICIENT_RESOURCES", waited.text
        # Once it is, bob's next query is answered: alice's is dropped before it waits.
        time.sleep(3)
        answered = start_query("bob")
        assert answered.status_code == 200 and answered.json()["data"] == [[2]], answered.text
        # alice, come back, is told what became of her query, as Trino tells it, until she lets it go; to bob it
        # is no query of his.
        next_uri = held.json()["nextUri"]
        assert trino_session(lg, "bob").get(next_uri, timeout=60).status_code == 404
        for _ in range(2):
            told = trino_session(lg, "alice").get(next_uri, timeout=60)
            assert told.status_code == 200, told.text
            assert told.json()["stats"]["state"] == "FAILED" and "nextUri" not in told.json(), told.text
            assert told.json()["error"]["errorName"] == "ABANDONED_QUERY", told.text
            assert "sql.trino_client_timeout_ms" in told.json()["error"]["message"], told.text
        assert trino_session(lg, "alice").delete(next_uri, timeout=60).status_code == 204
        assert trino_session(lg, "alice").get(next_uri, timeout=60).status_code == 404
        events = lg.audit_events()
    finally:
        lg.stop()
    alices = [e for e in events if e["action"] == "sql:Select" and e["principal"]["subject"] == "alice"
              and e.get("stage") != "decision"]
    assert [(e["outcome"] or {}).get("incomplete") for e in alices] == [True], alices


def test_trino_show_catalogs_lists_the_gateway(gw):
    assert trino_rows(gw, "dave", "SHOW CATALOGS") == [["lakegate"]]


@pytest.mark.parametrize("user", USERS)
def test_trino_show_schemas_and_tables_list_only_what_the_user_may_see(gw, user):
    assert [s for (s,) in trino_rows(gw, user, "SHOW SCHEMAS FROM lakegate")] == visible_schemas(user)
    listed = []
    for schema in ("sales", "hr"):
        listed += [f"{schema}.{t}" for (t,) in trino_rows(gw, user, f"SHOW TABLES FROM {schema}")]
    assert sorted(listed) == visible_tables(user)


@pytest.mark.parametrize("user", USERS)
def test_trino_describe_shows_visible_columns_with_trino_types_and_hides_tables(gw, user):
    for table, columns in VISIBLE[user].items():
        rows = trino_rows(gw, user, f"DESCRIBE {table}")
        assert [r[0] for r in rows] == columns
        assert_nothing_hidden(user, str(rows))
    for table in {"sales.orders", "hr.employees"} - set(VISIBLE[user]):
        with pytest.raises(trino.exceptions.TrinoUserError) as e:
            trino_rows(gw, user, f"SHOW COLUMNS FROM lakegate.{table}")
        assert e.value.error_name == "TABLE_NOT_FOUND"


def test_trino_information_schema_uses_trino_type_names(gw):
    rows = trino_rows(gw, "carol", "SELECT column_name, data_type FROM lakegate.information_schema.columns "
                      "WHERE table_schema = 'hr' ORDER BY ordinal_position")
    assert rows == [["id", "bigint"], ["name", "varchar"], ["department", "varchar"],
                    ["salary", "decimal(12,2)"], ["ssn", "varchar"]]


def test_trino_prepared_statements_bind_parameters_and_stay_governed(gw):
    assert trino_rows(gw, "alice", "SELECT count(*) FROM sales.orders WHERE region = ?", ["US"]) == [[0]]
    assert trino_rows(gw, "carol", "SELECT ssn FROM hr.employees WHERE id = ? AND name <> ?", [1, "O'Brien?"]) \
        != []
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SELECT ssn FROM hr.employees WHERE id = ?", [1])
    assert e.value.error_name == "PERMISSION_DENIED"


def test_trino_legacy_prepared_statements_bind_parameters_and_stay_governed(gw):
    # PREPARE, EXECUTE with X-Trino-Prepared-Statement, DEALLOCATE PREPARE: what older Trino servers need and
    # the client does with legacy_prepared_statements=True.
    rows = trino_rows(gw, "carol", "SELECT name FROM hr.employees WHERE id = ? AND name <> ?", [1, "a,b?"],
                      legacy=True)
    assert len(rows) == 1
    assert trino_rows(gw, "alice", "SELECT count(*) FROM sales.orders WHERE region = ?", ["US"], legacy=True) == [[0]]
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SELECT ssn FROM hr.employees WHERE id = ?", [1], legacy=True)
    assert e.value.error_name == "PERMISSION_DENIED"


def test_trino_show_session_and_roles_are_empty_and_other_shows_are_not_supported(gw):
    assert trino_rows(gw, "alice", "SHOW SESSION") == []
    assert trino_rows(gw, "alice", "SHOW CURRENT ROLES") == []
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SHOW GRANTS")
    assert e.value.error_name == "NOT_SUPPORTED"


def test_trino_refusals_are_trino_errors(gw):
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SHOW TABLES FROM hive.default")
    assert e.value.error_name == "CATALOG_NOT_FOUND"
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SELECT * FROM information_schema.tables, sales.orders")
    assert e.value.error_name == "NOT_SUPPORTED"
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        trino_rows(gw, "alice", "SHOW FUNCTIONS")
    assert e.value.error_name == "NOT_SUPPORTED"


@pytest.mark.parametrize("user", USERS)
def test_trino_sqlalchemy_inspector_lists_only_visible_objects(gw, user):
    insp = sqlalchemy.inspect(trino_engine(gw, user))
    assert sorted(insp.get_schema_names()) == visible_schemas(user)
    for schema in ("sales", "hr"):
        assert [f"{schema}.{t}" for t in insp.get_table_names(schema=schema)] == \
            [t for t in visible_tables(user) if t.startswith(schema + ".")]
        assert insp.get_view_names(schema=schema) == []
    for table, columns in VISIBLE[user].items():
        schema, name = table.split(".")
        reflected = insp.get_columns(name, schema=schema)
        assert [c["name"] for c in reflected] == columns
        assert not any(isinstance(c["type"], sqlalchemy.types.NullType) for c in reflected)
        assert insp.get_pk_constraint(name, schema=schema)["constrained_columns"] == []
        assert insp.get_table_comment(name, schema=schema) == {"text": None}
    for table in {"sales.orders", "hr.employees"} - set(VISIBLE[user]):
        schema, name = table.split(".")
        assert not insp.has_table(name, schema=schema)


def test_trino_pandas_read_sql_table_reads_the_governed_view(gw):
    orders = pandas.read_sql_table("orders", trino_engine(gw, "bob"), schema="sales")
    assert list(orders.columns) == VISIBLE["bob"]["sales.orders"]
    assert len(orders) > 0 and set(orders["region"]) == {"US"}
    assert all(re.fullmatch(r"\*{12}\d{4}", c) for c in orders["card_number"])


# ---------------------------------------------------------------- psqlODBC through pyodbc


def odbc(gw, user):
    if "PostgreSQL Unicode" not in pyodbc.drivers():
        pytest.fail("psqlODBC (odbc-postgresql, unixodbc) is required: run scripts/install-test-deps")
    return pyodbc.connect(f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={gw.sql_port};DATABASE=lakegate;"
                          f"UID={user};PWD={token(gw, user)};SSLMODE=disable", timeout=10)


@pytest.mark.parametrize("user", USERS)
def test_odbc_catalog_functions_show_only_what_the_user_may_see(gw, user):
    cur = odbc(gw, user).cursor()
    tables = cur.tables(tableType="TABLE").fetchall()
    assert sorted(f"{t.table_schem}.{t.table_name}" for t in tables) == visible_tables(user)
    seen = []
    for table, columns in VISIBLE[user].items():
        schema, name = table.split(".")
        rows = cur.columns(table=name, schema=schema).fetchall()
        assert [c.column_name for c in rows] == columns
        seen += [str(tuple(r)) for r in rows]
        assert cur.primaryKeys(name, schema=schema).fetchall() == []
        assert cur.foreignKeys(name, schema=schema).fetchall() == []
        assert cur.statistics(name, schema=schema).fetchall() == []
    for table in {"sales.orders", "hr.employees"} - set(VISIBLE[user]):
        schema, name = table.split(".")
        assert cur.columns(table=name, schema=schema).fetchall() == []
    assert cur.procedures().fetchall() == []
    assert_nothing_hidden(user, str([tuple(t) for t in tables]) + "".join(seen))


def test_odbc_queries_are_governed(gw):
    cur = odbc(gw, "alice").cursor()
    assert [tuple(r) for r in cur.execute("select distinct region from sales.orders").fetchall()] == [("EU",)]
    with pytest.raises(pyodbc.Error, match="42501"):
        cur.execute("select ssn from hr.employees")
