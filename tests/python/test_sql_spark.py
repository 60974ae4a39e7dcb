"""Governed SQL on the Spark backend: the demo tables live on a Spark Connect server, real clients query them.

One Spark Connect server per module (tests/spark/connect-server: local mode, an authentication token, its event log
in a temp dir), and one gateway whose catalog moves both demo tables to it: `sales.orders` as the demo CSV,
`hr.employees` as a Parquet file converted from the demo CSV with the catalog's types. A default gateway (embedded
engine) serves as the reference: the same user must get the same answers from both, and the demo files come from it.

What must hold: psql, pgJDBC and the trino client get exactly what the demo policies allow (alice the EU orders with
masked cards, carol the employees with salaries, dave nothing); PostgreSQL text that Spark would read differently
(backslashes, `${...}`) stays text; nothing names Spark's views, paths or functions; every statement is one audit
record, and its Spark job is tagged with the user and the audit record's request id; Spark unreachable or refusing
the token is SQLSTATE 08006 and leaves the session usable; a cancelled statement, and one whose client goes away,
interrupts its Spark job.
"""

import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import requests
import trino

from conftest import REPO, Lakegate, demo_token, eventually, free_port, wait_for_port
from sql_support import JDBC_JAR, jdbc_classes  # noqa: F401  (a fixture: the compiled pgJDBC test program)

CONNECT_SERVER = REPO / "tests" / "spark" / "connect-server"
MASKED_CARD = re.compile(r"\*{12}\d{4}")
EMPLOYEES_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("name", pa.string()),
    ("department", pa.string()),
    ("salary", pa.decimal128(12, 2)),
    ("ssn", pa.string()),
])


# ---------------------------------------------------------------- fixtures


def debian_jdk17():
    """The JDK the suite installs (Spark 4 needs 17 or later; other JDKs on the machine are not tested)."""
    homes = sorted(Path("/usr/lib/jvm").glob("java-17-openjdk-*"))
    if not homes:
        pytest.fail("openjdk-17-jdk-headless is required: run scripts/install-test-deps")
    return homes[0]


class SparkConnect:
    """A Spark Connect server (tests/spark/connect-server) on a free port, in its own process group."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.token_file = root / "token"
        self.token_file.write_text(self.token)
        self.event_dir = root / "events"
        self.log_path = root / "connect-server.log"
        self._events, self._read = [], {}
        env = dict(os.environ, JAVA_HOME=str(debian_jdk17()))
        self.log = open(self.log_path, "wb")
        # cwd: Spark writes its warehouse and metastore directories where it starts.
        self.process = subprocess.Popen(
            [str(CONNECT_SERVER), str(self.port), str(self.token_file), str(self.event_dir)],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"the Spark Connect server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the Spark Connect server did not listen on {self.port} within 180 s:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines=40):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def events(self):
        """Every event of the event log so far. Each file is read on from where the last call stopped, whole lines
        only (Spark may be writing the last one)."""
        for path in sorted(self.event_dir.glob("*")):
            key = path.name.removesuffix(".inprogress")  # the file is renamed when the application ends
            done = self._read.get(key, 0)
            with open(path, "rb") as f:
                f.seek(done)
                data = f.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    self._events.append(json.loads(line))
                except ValueError:
                    pass
            self._read[key] = done + end
        return self._events

    def jobs(self):
        """{job id: (its SparkListenerJobStart, its SparkListenerJobEnd or None)}."""
        starts, ends = {}, {}
        for e in self.events():
            if e.get("Event") == "SparkListenerJobStart":
                starts[e["Job ID"]] = e
            elif e.get("Event") == "SparkListenerJobEnd":
                ends[e["Job ID"]] = e
        return {job: (start, ends.get(job)) for job, start in starts.items()}

    def stop(self):
        if self.process.poll() is None:
            # The JVM may take long to stop while a job runs: ask, then insist.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        else:
            # The server script has exited; its JVM may not have.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    server = SparkConnect(tmp_path_factory.mktemp("spark-connect"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded():
    """The reference: a default gateway on the embedded engine. It also wrote the demo tables' CSV files."""
    lg = Lakegate()
    yield lg
    lg.stop()


@pytest.fixture(scope="module")
def demo_files(embedded, tmp_path_factory):
    """The demo tables as Spark reads them: orders as the demo CSV, employees converted to Parquet."""
    root = tmp_path_factory.mktemp("spark-tables")
    warehouse = embedded.data_dir / "warehouse"
    orders_csv = warehouse / "sales" / "orders" / "part-0.csv"
    employees_csv = warehouse / "hr" / "employees" / "part-0.csv"
    eventually("the demo warehouse", lambda: orders_csv.exists() and employees_csv.exists())
    orders_dir, employees_dir = root / "orders", root / "employees"
    orders_dir.mkdir()
    employees_dir.mkdir()
    shutil.copy(orders_csv, orders_dir / "part-0.csv")
    table = pacsv.read_csv(employees_csv, convert_options=pacsv.ConvertOptions(column_types=EMPLOYEES_SCHEMA))
    pq.write_table(table.select(EMPLOYEES_SCHEMA.names).cast(EMPLOYEES_SCHEMA), employees_dir / "part-0.parquet")
    with open(orders_csv, newline="") as f:
        orders = list(csv.DictReader(f))
    with open(employees_csv, newline="") as f:
        employees = list(csv.DictReader(f))
    assert len(orders) == 24 and len(employees) == 8
    return {"orders_dir": orders_dir, "employees_dir": employees_dir, "orders": orders, "employees": employees}


def spark_policies(root, demo_files):
    """A copy of the demo policies whose catalog puts both demo tables on the backend `spark`."""
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    catalog = policies / "catalog.toml"
    text = catalog.read_text()
    for name, fmt, directory in [
        ("sales/orders", "csv", demo_files["orders_dir"]),
        ("hr/employees", "parquet", demo_files["employees_dir"]),
    ]:
        old = re.search(
            rf'backend = "embedded"\nformat = "iceberg"\nlocation = "s3://lake/iceberg/{name}-[0-9a-z]+/"\n', text
        )
        assert old, f"the demo catalog no longer describes {name} as expected"
        new = f'backend = "spark"\nformat = "{fmt}"\nlocation = "{directory.as_uri()}/"\n'
        text = text.replace(old.group(0), new)
    assert text.count('backend = "spark"') == 2 and "embedded" not in text.split("[[tables]]", 1)[1]
    catalog.write_text(text)
    return policies


def spark_gateway(policies, remote, token_file):
    return Lakegate(env={
        "LAKEGATE__POLICY__DIR": str(policies),
        "LAKEGATE__SQL__SPARK": f'[{{name = "spark", remote = "{remote}", token_file = "{token_file}"}}]',
    })


@pytest.fixture(scope="module")
def policies(demo_files, tmp_path_factory):
    return spark_policies(tmp_path_factory.mktemp("spark-policies"), demo_files)


@pytest.fixture(scope="module")
def gw(spark, policies):
    """The gateway with both demo tables on the module's Spark Connect server."""
    lg = spark_gateway(policies, f"sc://127.0.0.1:{spark.port}", spark.token_file)
    yield lg
    lg.stop()


# ---------------------------------------------------------------- clients


def psql(lg, user, *statements):
    """psql, one connection, each statement a -c (errors do not stop the next one)."""
    env = dict(os.environ, PGPASSWORD=demo_token(lg, user), PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={lg.sql_port} dbname=lakegate user={user} sslmode=disable"
    args = ["psql", dsn, "-X", "-A", "-t", "-F", "|", "-v", "VERBOSITY=verbose"]
    for sql in statements:
        args += ["-c", sql]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def connect(lg, user, autocommit=False):
    return psycopg.connect(host="127.0.0.1", port=lg.sql_port, dbname="lakegate", user=user,
                           password=demo_token(lg, user), sslmode="disable", connect_timeout=10,
                           autocommit=autocommit)


def query(lg, user, sql):
    """Column names and rows of `sql` through psycopg."""
    with connect(lg, user) as c:
        cur = c.execute(sql)
        return [d.name for d in cur.description], cur.fetchall()


def jdbc(lg, classes, user, *args):
    cmd = ["java", "-cp", f"{JDBC_JAR}:{classes}", "LakegateJdbc",
           f"jdbc:postgresql://127.0.0.1:{lg.sql_port}/lakegate", user, demo_token(lg, user), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def trino_cursor(lg, user):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + demo_token(lg, user)
    conn = trino.dbapi.connect(host="127.0.0.1", port=lg.control_port, user=user, http_scheme="http",
                               http_session=session)
    return conn.cursor()


def eu_orders(demo_files):
    return [o for o in demo_files["orders"] if o["region"] == "EU"]


def audited(lg, marker):
    """The audit records of the statements whose original text holds `marker`, once their rows are counted."""
    return [e for e in lg.audit_events()
            if e.get("sql") and marker in e["sql"]["original"] and e["sql"].get("rows") is not None]


def job_tags(start):
    return start.get("Properties", {}).get("spark.job.tags", "").split(",")


# ---------------------------------------------------------------- psql


def test_psql_alice_gets_the_eu_orders_of_the_file_with_masked_cards(gw, demo_files):
    r = psql(gw, "alice", "select order_id, customer, region, amount, card_number from sales.orders")
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.split("\n") if line]
    expected = eu_orders(demo_files)
    assert len(rows) == len(expected) == 12
    assert {row[2] for row in rows} == {"EU"}
    by_id = {o["order_id"]: o for o in expected}
    for order_id, customer, region, amount, card in rows:
        o = by_id[order_id]
        assert (customer, Decimal(amount)) == (o["customer"], Decimal(o["amount"]))
        assert MASKED_CARD.fullmatch(card) and card[-4:] == o["card_number"][-4:], card
    for o in demo_files["orders"]:
        assert o["card_number"] not in r.stdout


def test_psql_aggregate_on_spark_equals_the_sum_of_the_eu_rows_of_the_file(gw, demo_files):
    r = psql(gw, "alice", "SELECT count(*), sum(amount) FROM sales.orders")
    assert r.returncode == 0, r.stderr
    count, total = r.stdout.strip().split("|")
    expected = eu_orders(demo_files)
    assert int(count) == len(expected)
    assert Decimal(total) == sum(Decimal(o["amount"]) for o in expected)


def test_psql_a_hidden_column_is_42501_and_dave_is_refused_everything(gw):
    r = psql(gw, "alice", "SELECT ssn FROM hr.employees")
    assert r.returncode != 0 and "42501" in r.stderr and "ssn" in r.stderr, r.stderr
    assert r.stdout == ""
    for sql in ["SELECT * FROM sales.orders", "SELECT name FROM hr.employees"]:
        r = psql(gw, "dave", sql)
        assert r.returncode != 0 and "42501" in r.stderr, r.stderr
        assert r.stdout == ""


def test_psql_alice_reads_employees_from_parquet_without_salary_or_ssn(gw, demo_files):
    r = psql(gw, "alice", "SELECT * FROM hr.employees")
    assert r.returncode == 0, r.stderr
    rows = sorted(tuple(line.split("|")) for line in r.stdout.split("\n") if line)
    assert rows == sorted((e["id"], e["name"], e["department"]) for e in demo_files["employees"])


# ---------------------------------------------------------------- pgJDBC


def test_jdbc_carol_reads_the_salaries_of_the_parquet_file(gw, jdbc_classes, demo_files):
    r = jdbc(gw, jdbc_classes, "carol", "query", "select id, name, salary, ssn from hr.employees")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = sorted(line.split("\t") for line in r.stdout.strip().split("\n"))
    expected = sorted([e["id"], e["name"], e["salary"], e["ssn"]] for e in demo_files["employees"])
    assert rows == expected


def test_jdbc_prepared_statement_binds_its_parameter_on_spark(gw, jdbc_classes, demo_files):
    # Six executions: the last ones run as a named server-side statement with binary results.
    r = jdbc(gw, jdbc_classes, "carol", "prepared", "select name, salary from hr.employees where id = ?", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    chen = next(e for e in demo_files["employees"] if e["id"] == "3")
    name, salary = r.stdout.strip().split("\t")
    assert name == chen["name"] and Decimal(salary) == Decimal(chen["salary"])
    # The row filter holds with a bound parameter: order 2 is a US order.
    r = jdbc(gw, jdbc_classes, "alice", "prepared", "select order_id, card_number from sales.orders where order_id = ?",
             "2")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


# ---------------------------------------------------------------- trino


def test_trino_alice_gets_the_rows_psql_gets_with_typed_columns(gw):
    cur = trino_cursor(gw, "alice")
    cur.execute("select order_id, customer, region, amount, card_number from sales.orders")
    rows = cur.fetchall()
    assert [d.name for d in cur.description] == ["order_id", "customer", "region", "amount", "card_number"]
    types = [d.type_code for d in cur.description]
    assert types[0] == "bigint" and types[1] == types[2] == types[4] == "varchar", types
    assert types[3].startswith("decimal("), types
    assert all(isinstance(r[0], int) and isinstance(r[3], Decimal) for r in rows)
    r = psql(gw, "alice", "select order_id, customer, region, amount, card_number from sales.orders")
    assert r.returncode == 0, r.stderr
    via_psql = sorted((int(a), b, c, Decimal(d), e) for a, b, c, d, e in
                      (line.split("|") for line in r.stdout.split("\n") if line))
    assert sorted(tuple(row) for row in rows) == via_psql
    assert len(rows) == 12


def test_trino_refuses_a_hidden_column_on_spark(gw):
    cur = trino_cursor(gw, "alice")
    with pytest.raises(trino.exceptions.TrinoUserError) as e:
        cur.execute("select ssn from hr.employees")
        cur.fetchall()
    assert e.value.error_name == "PERMISSION_DENIED"


# ---------------------------------------------------------------- same answers as the embedded engine

SAME_ANSWERS = {
    "filter": "SELECT order_id, customer, amount, card_number FROM sales.orders "
              "WHERE amount BETWEEN 100 AND 700 AND customer NOT IN ('Hooli') AND customer LIKE '%e%'",
    "group_by": "SELECT customer, count(*) AS n, sum(amount) AS total, min(amount) AS lo, max(amount) AS hi "
                "FROM sales.orders GROUP BY customer",
    "order_by_limit": "SELECT order_id, amount FROM sales.orders ORDER BY amount DESC, order_id LIMIT 5",
    "self_join": "SELECT a.order_id, b.order_id AS other, a.customer FROM sales.orders a "
                 "JOIN sales.orders b ON a.customer = b.customer AND a.order_id < b.order_id",
    "cte": "WITH big AS (SELECT customer, amount FROM sales.orders WHERE amount > 250) "
           "SELECT customer, count(*) AS n, sum(amount) AS total FROM big GROUP BY customer HAVING count(*) >= 1",
    "expressions": "SELECT order_id, upper(customer) AS c, substr(card_number, 13) AS last4, amount * 2 AS twice, "
                   "CASE WHEN amount > 500 THEN 'big' ELSE 'small' END AS size FROM sales.orders",
    "parquet_group_by": "SELECT department, count(*) AS n FROM hr.employees WHERE name <> 'Eve' GROUP BY department",
    "masked_column_filter": "SELECT order_id, card_number FROM sales.orders WHERE card_number LIKE '%1'",
}


@pytest.mark.parametrize("name", list(SAME_ANSWERS))
def test_spark_and_the_embedded_engine_give_alice_the_same_answer(gw, embedded, name):
    sql = SAME_ANSWERS[name]
    columns, on_spark = query(gw, "alice", sql)
    reference_columns, reference = query(embedded, "alice", sql)
    assert reference, "the reference query returns no rows: it would not compare anything"
    assert columns == reference_columns
    if "ORDER BY" in sql:
        assert on_spark == reference
    else:
        assert sorted(on_spark) == sorted(reference)


# ---------------------------------------------------------------- PostgreSQL text Spark would read differently

# Each statement reads a Spark table, so that it runs on Spark (a statement without tables runs on the embedded
# engine).
LITERALS = [
    ("SELECT '${env:HOME}' AS x FROM sales.orders LIMIT 1", "${env:HOME}"),
    (r"SELECT E'\x24{spark.app.name}' AS x FROM sales.orders LIMIT 1", "${spark.app.name}"),
    ("SELECT '$${env:HOME}' AS x FROM sales.orders LIMIT 1", "$${env:HOME}"),
    ("SELECT 'a\\' AS x FROM sales.orders LIMIT 1", "a\\"),
    ("SELECT 'it''s' AS x FROM sales.orders LIMIT 1", "it's"),
    ("SELECT $$\\'$$ AS x FROM sales.orders LIMIT 1", "\\'"),
    ("SELECT U&'x\\005c' AS x FROM sales.orders LIMIT 1", "x\\"),
    (r"SELECT 'C:\dir\''s' AS x FROM sales.orders LIMIT 1", "C:\\dir\\'s"),
    ("SELECT 'a''''b' AS x FROM sales.orders LIMIT 1", "a''b"),
]


@pytest.mark.parametrize("sql,value", LITERALS, ids=[f"literal{i}" for i in range(len(LITERALS))])
def test_a_string_literal_reaches_spark_as_the_same_text(gw, sql, value):
    assert query(gw, "alice", sql)[1] == [(value,)]


# A literal that ends in a backslash, in every PostgreSQL spelling: on Spark the backslash must not escape the
# closing quote, or `OR region = 'US'` becomes part of the statement.
BACKSLASH_TRICKS = [
    "SELECT order_id, region, card_number FROM sales.orders WHERE customer = 'x\\' OR region = 'US' --'",
    "SELECT order_id, region, card_number FROM sales.orders WHERE customer = 'x\\\\' OR region = 'US' --'",
    "SELECT order_id, region, card_number FROM sales.orders WHERE customer = E'x\\\\' OR region = 'US' --'",
    "SELECT order_id, region, card_number FROM sales.orders WHERE customer = $$x\\$$ OR region = 'US' --'",
    "SELECT order_id, region, card_number FROM sales.orders WHERE customer = U&'x\\005c' OR region = 'US' --'",
    # Printed by sqlparser alone, the string would end at the backslash and `OR region = 'US'` be syntax.
    r"SELECT order_id, region, card_number FROM sales.orders WHERE customer = 'x\'' OR region = ''US'' --'",
]


@pytest.mark.parametrize("sql", BACKSLASH_TRICKS, ids=[f"trick{i}" for i in range(len(BACKSLASH_TRICKS))])
def test_a_literal_ending_in_a_backslash_cannot_reach_other_rows(gw, demo_files, sql):
    r = psql(gw, "alice", sql)
    assert r.returncode == 0, r.stderr
    assert "US" not in r.stdout, r.stdout
    for o in demo_files["orders"]:
        assert o["card_number"] not in r.stdout
    # The same through the extended protocol (where the statement is also described on Spark).
    assert query(gw, "alice", sql)[1] == []


def test_filters_see_only_the_masked_card_numbers(gw, demo_files):
    full = eu_orders(demo_files)[0]["card_number"]
    assert query(gw, "alice", f"SELECT order_id FROM sales.orders WHERE card_number = '{full}'")[1] == []
    assert query(gw, "alice", f"SELECT order_id FROM sales.orders WHERE card_number LIKE '{full[:6]}%'")[1] == []


REFUSED = [
    "SELECT * FROM lakegate_5_sales_orders",
    "SELECT * FROM lakegate_2_hr_employees",
    "SELECT o.order_id FROM sales.orders o JOIN lakegate_5_sales_orders v ON o.order_id = v.order_id",
    "WITH x AS (SELECT * FROM sales.orders) SELECT * FROM LAKEGATE_5_SALES_ORDERS",
    "SELECT * FROM parquet.`/etc/passwd`",
    'SELECT * FROM parquet."/etc/passwd"',
    'SELECT * FROM csv."file:///etc/passwd"',
    "SELECT * FROM spark_catalog.default.lakegate_5_sales_orders",
    "SELECT reflect('java.lang.System', 'getenv', 'HOME')",
    "SELECT reflect('java.lang.System', 'getenv', 'HOME') FROM sales.orders",
    "SELECT java_method('java.lang.System', 'getenv', 'HOME') FROM sales.orders",
    "SELECT * FROM range(3)",
    "SELECT count(*) FROM sales.orders, range(3)",
    "SELECT input_file_name() FROM sales.orders",
    'SELECT 1 AS "${env:HOME}" FROM sales.orders',
]


@pytest.mark.parametrize("sql", REFUSED, ids=[f"refused{i}" for i in range(len(REFUSED))])
def test_spark_only_names_are_refused(gw, demo_files, sql):
    with connect(gw, "alice") as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(sql).fetchall()
        # The error names no file Spark reads.
        assert str(demo_files["orders_dir"]) not in str(e.value) and "/etc/passwd:" not in str(e.value)
        # The session goes on.
        c.rollback()
        assert c.execute("SELECT count(*) FROM sales.orders").fetchall() == [(12,)]


# ---------------------------------------------------------------- identity and audit


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_the_spark_job_of_a_statement_is_tagged_with_its_user_and_audit_record(gw, spark, user):
    marker = f"tag_probe_{uuid.uuid4().hex[:12]}"
    table = "sales.orders" if user == "alice" else "hr.employees"
    columns, rows = query(gw, user, f"SELECT count(*) AS {marker} FROM {table}")
    assert columns == [marker] and rows[0][0] > 0
    record = eventually("the audit record", lambda: audited(gw, marker))[0]
    request = record["request_id"]
    assert request

    def jobs_of_the_statement():
        return [start for start, _ in spark.jobs().values()
                if any(t.endswith(f"_Tag_lakegate-request={request}") for t in job_tags(start))]

    jobs = eventually("the statement's Spark job in the event log", jobs_of_the_statement, timeout=60)
    for start in jobs:
        user_tags = [t.split("_Tag_", 1)[1] for t in job_tags(start) if "_Tag_lakegate-user=" in t]
        assert user_tags == [f"lakegate-user={user}"], job_tags(start)
        # The job runs the statement Lakegate translated, not the client's text.
        assert marker in start["Properties"].get("callSite.long", "")


def test_one_statement_is_one_audit_record_naming_the_user_and_the_rewritten_statement(gw):
    marker = f"audit_probe_{uuid.uuid4().hex[:12]}"
    # psycopg sends Parse/Describe/Bind/Execute: the statement is described and run on Spark.
    assert query(gw, "alice", f"SELECT count(*) AS {marker} FROM sales.orders")[1] == [(12,)]
    record = eventually("the audit record", lambda: audited(gw, marker))[0]
    # The audit sink writes in order: once a later statement's record is there, so is every record of this one.
    later = f"audit_later_{uuid.uuid4().hex[:12]}"
    query(gw, "alice", f"SELECT 1 AS {later} FROM sales.orders LIMIT 1")
    eventually("the later statement's audit record", lambda: audited(gw, later))
    records = [e for e in gw.audit_events() if e.get("sql") and marker in e["sql"]["original"]]
    assert records == [record]
    assert record["action"] == "sql:Select" and record["decision"] == "allow"
    assert record["principal"]["subject"] == "alice"
    assert record["sql"]["tables"] == ["sales.orders"] and record["sql"]["rows"] == 1
    rewritten = record["sql"]["rewritten"]
    assert marker in rewritten and "'EU'" in rewritten and "lakegate_" not in rewritten


# ---------------------------------------------------------------- Spark unreachable or refusing Lakegate


def unusable_spark_answers_08006_and_the_session_goes_on(lg):
    r = psql(lg, "alice", "SELECT count(*) FROM sales.orders", "SELECT name FROM hr.employees",
             "SELECT 41 + 1 AS answer")
    errors = [line for line in r.stderr.split("\n") if line.startswith("ERROR:")]
    assert len(errors) == 2, r.stderr
    for line in errors:
        assert "08006" in line and "Spark backend" in line and "not available" in line, line
    # The third statement has no tables: it runs on the embedded engine, on the same connection.
    assert r.stdout.strip() == "42", r.stdout + r.stderr
    return r.stderr


def test_spark_unreachable_is_08006_and_the_session_stays_usable(policies, start_lakegate):
    lg = start_lakegate(env={
        "LAKEGATE__POLICY__DIR": str(policies),
        "LAKEGATE__SQL__SPARK": f'[{{name = "spark", remote = "sc://127.0.0.1:{free_port()}"}}]',
    })
    unusable_spark_answers_08006_and_the_session_goes_on(lg)


def test_a_wrong_spark_token_is_08006_and_the_session_stays_usable(spark, policies, start_lakegate, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_hex(24))
    lg = start_lakegate(env={
        "LAKEGATE__POLICY__DIR": str(policies),
        "LAKEGATE__SQL__SPARK": f'[{{name = "spark", remote = "sc://127.0.0.1:{spark.port}", '
                                f'token_file = "{wrong}"}}]',
    })
    stderr = unusable_spark_answers_08006_and_the_session_goes_on(lg)
    assert wrong.read_text() not in stderr and spark.token not in stderr


def test_a_trino_client_that_goes_away_before_its_first_page_interrupts_the_spark_job(gw, spark):
    # Spark sends nothing before a partition is done, so the POST that starts the query waits for the first page;
    # the client gives up during that wait (its socket closed under it).
    marker = f"slow_trino_{uuid.uuid4().hex[:12]}"
    body = SLOW.format(marker=marker).encode()
    request = (f"POST /v1/statement HTTP/1.1\r\nHost: 127.0.0.1:{gw.control_port}\r\n"
               f"Authorization: Bearer {demo_token(gw, 'alice')}\r\nX-Trino-User: alice\r\n"
               f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    with socket.create_connection(("127.0.0.1", gw.control_port), timeout=60) as client:
        client.sendall(request)
        eventually("the slow statement's Spark job", lambda: jobs_of(spark, marker), timeout=60)
        time.sleep(3)
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)  # no answer yet: the statement is still running
        client.shutdown(socket.SHUT_RDWR)
    assert_stopped_on_spark(spark, marker)


# ---------------------------------------------------------------- writes, and files that change under Spark

# Analysts may add orders of their own region only (the row filter is the INSERT's WITH CHECK).
INSERT_POLICY = """
@id("orders-analysts-insert-own-region")
@row_filter("region = principal.region")
permit (principal in Group::"analysts", action == Action::"InsertTable", resource in Table::"sales.orders");
"""
ORDER_COLUMNS = "(order_id, customer, region, amount, card_number)"


@pytest.fixture(scope="module")
def writable(spark, demo_files, tmp_path_factory):
    """A gateway over copies of both demo tables on Spark (the other tests' files stay as they are), with
    INSERT_POLICY added."""
    root = tmp_path_factory.mktemp("spark-writes")
    files = {}
    for name in ("orders_dir", "employees_dir"):
        files[name] = root / name
        shutil.copytree(demo_files[name], files[name])
    policies = spark_policies(root, files)
    (policies / "insert.cedar").write_text(INSERT_POLICY)
    lg = spark_gateway(policies, f"sc://127.0.0.1:{spark.port}", spark.token_file)
    yield lg, files
    lg.stop()


def data_files(directory):
    """The files Spark reads as the table's (it skips names starting with `_` or `.`)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def csv_rows(directory):
    rows = []
    for path in data_files(directory):
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def test_alice_inserts_orders_of_her_region_and_reads_them_back(writable):
    lg, files = writable
    before = csv_rows(files["orders_dir"])
    with connect(lg, "alice", autocommit=True) as c:
        cur = c.execute(f"INSERT INTO sales.orders {ORDER_COLUMNS} VALUES "
                        "(9001, 'Inserted Ltd', 'EU', 12.34, '4111111111111111'), "
                        "(9002, 'Inserted Ltd', 'EU', 5, '4111111111112222')")
        assert (cur.statusmessage, cur.rowcount) == ("INSERT 0 2", 2)
    # Spark appended them to the table's files, in the table's CSV form.
    after = csv_rows(files["orders_dir"])
    assert len(after) == len(before) + 2
    added = sorted((r["order_id"], r["customer"], r["region"], Decimal(r["amount"]), r["card_number"])
                   for r in after if r["customer"] == "Inserted Ltd")
    assert added == [("9001", "Inserted Ltd", "EU", Decimal("12.34"), "4111111111111111"),
                     ("9002", "Inserted Ltd", "EU", Decimal("5"), "4111111111112222")]
    # Read back through the gateway under her read policy: the rows, with the card numbers masked.
    _, rows = query(lg, "alice", "SELECT order_id, amount, card_number FROM sales.orders "
                                 "WHERE customer = 'Inserted Ltd' ORDER BY order_id")
    assert [(r[0], r[1]) for r in rows] == [(9001, Decimal("12.34")), (9002, Decimal("5.00"))]
    assert [r[2][-4:] for r in rows] == ["1111", "2222"] and all(MASKED_CARD.fullmatch(r[2]) for r in rows)
    # One audit record, naming her and the rows written.
    (event,) = eventually("the INSERT's audit record", lambda: [
        e for e in lg.audit_events()
        if e.get("sql") and e["sql"]["original"].startswith("INSERT") and "Inserted Ltd" in e["sql"]["original"]])
    assert (event["action"], event["decision"]) == ("sql:Insert", "allow")
    assert event["principal"]["subject"] == "alice" and event["sql"]["rows"] == 2


def test_a_row_outside_her_region_is_42501_and_nothing_of_the_statement_is_written(writable):
    lg, files = writable
    before = data_files(files["orders_dir"])
    with connect(lg, "alice", autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            c.execute(f"INSERT INTO sales.orders {ORDER_COLUMNS} VALUES "
                      "(9101, 'Half Ltd', 'EU', 1, '4000000000000001'), (9102, 'Half Ltd', 'US', 1, '4000000000000002')")
        assert 'new row violates row-level security policy for table "orders"' in str(refused.value)
        # The session goes on.
        assert c.execute("SELECT 41 + 1").fetchone() == (42,)
    assert data_files(files["orders_dir"]) == before
    assert not [r for r in csv_rows(files["orders_dir"]) if r["customer"] == "Half Ltd"]


def test_a_user_without_an_insert_grant_is_refused_before_spark_is_asked(writable, spark):
    lg, files = writable
    before = data_files(files["orders_dir"])
    for user in ("dave", "carol"):
        with connect(lg, user, autocommit=True) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(f"INSERT INTO sales.orders {ORDER_COLUMNS} VALUES (9201, 'No Ltd', 'EU', 1, '1')")
    assert data_files(files["orders_dir"]) == before


def test_carol_adds_an_employee_to_the_parquet_table_and_unset_columns_are_null(writable):
    lg, files = writable
    with connect(lg, "carol", autocommit=True) as c:
        cur = c.execute("INSERT INTO hr.employees (id, name, department) VALUES (901, 'Noor', 'data')")
        assert cur.rowcount == 1
        assert c.execute("SELECT name, department, salary, ssn FROM hr.employees WHERE id = 901").fetchall() == [
            ("Noor", "data", None, None)]
    table = pq.read_table(files["employees_dir"])
    assert table.schema.field("salary").type == pa.decimal128(12, 2)
    (row,) = [r for r in table.to_pylist() if r["id"] == 901]
    assert row == {"id": 901, "name": "Noor", "department": "data", "salary": None, "ssn": None}


@pytest.mark.parametrize("write", [
    "UPDATE hr.employees SET department = 'ops' WHERE id = 1",
    "DELETE FROM hr.employees WHERE id = 1",
])
def test_update_and_delete_on_spark_are_0A000_and_change_nothing(writable, write):
    lg, files = writable
    before = data_files(files["employees_dir"])
    with connect(lg, "carol", autocommit=True) as c, pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        c.execute(write)
    assert "cannot change rows in place" in str(refused.value)
    assert data_files(files["employees_dir"]) == before


def test_a_write_inside_a_transaction_block_is_refused_on_spark_which_could_not_roll_it_back(writable):
    lg, files = writable
    before = data_files(files["orders_dir"])
    # psycopg's default: every statement inside BEGIN ... COMMIT.
    with connect(lg, "alice") as c:
        assert c.execute("SELECT count(*) FROM sales.orders").fetchone()[0] > 0, "reads run as outside the block"
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            c.execute(f"INSERT INTO sales.orders {ORDER_COLUMNS} VALUES (9401, 'Block Ltd', 'EU', 1, '1')")
        assert "no transactions" in str(refused.value)
    assert data_files(files["orders_dir"]) == before


def test_files_added_and_removed_outside_lakegate_are_seen_by_the_next_statement(writable):
    lg, files = writable
    count = "SELECT count(*) FROM sales.orders"
    with connect(lg, "alice", autocommit=True) as c:
        (n,) = c.execute(count).fetchone()
        # Another job adds a file: an EU order alice may see, a US one she may not.
        added = files["orders_dir"] / "from-another-job.csv"
        added.write_text("order_id,customer,region,amount,card_number\n"
                         "9301,Elsewhere,EU,1.00,4000000000009301\n9302,Elsewhere,US,1.00,4000000000009302\n")
        assert c.execute(count).fetchone() == (n + 1,)
        # ... and compaction takes it away again: no error about a missing file, and the row is gone.
        added.unlink()
        assert c.execute(count).fetchone() == (n,)


# ---------------------------------------------------------------- Iceberg tables on Spark


@pytest.fixture(scope="module")
def iceberg_gw(spark, tmp_path_factory):
    """A gateway whose catalog is the demo's as shipped, both tables Iceberg tables of Lakegate's catalog, with only
    their backend moved to Spark: Spark reads the files of each table's current snapshot from the embedded store."""
    policies = tmp_path_factory.mktemp("spark-iceberg") / "policies"
    shutil.copytree(REPO / "policies", policies)
    catalog = policies / "catalog.toml"
    text = catalog.read_text()
    assert text.count('backend = "embedded"\nformat = "iceberg"') == 2, "the demo tables are no longer Iceberg"
    catalog.write_text(text.replace('backend = "embedded"', 'backend = "spark"'))
    lg = spark_gateway(policies, f"sc://127.0.0.1:{spark.port}", spark.token_file)
    yield lg
    lg.stop()


def iceberg_catalog(lg, user):
    """PyIceberg's REST catalog of `lg` as `user`."""
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog("lakegate", uri=f"{lg.control_url}/iceberg", warehouse="lake", token=demo_token(lg, user))


@pytest.mark.parametrize("user,sql", [
    ("alice", SAME_ANSWERS["filter"]),
    ("alice", SAME_ANSWERS["expressions"]),
    ("alice", SAME_ANSWERS["group_by"]),
    ("alice", SAME_ANSWERS["self_join"]),
    ("alice", SAME_ANSWERS["parquet_group_by"]),
    ("carol", "SELECT id, name, department, salary, ssn FROM hr.employees ORDER BY id"),
    ("carol", "SELECT e.department, count(*) AS n, sum(e.salary) AS total FROM hr.employees e "
              "JOIN hr.employees m ON e.department = m.department AND m.id = 1 GROUP BY e.department"),
], ids=["filter", "expressions", "group_by", "self_join", "employees", "carol_salaries", "carol_join"])
def test_the_demo_iceberg_tables_on_spark_answer_as_on_the_embedded_engine(iceberg_gw, embedded, user, sql):
    columns, on_spark = query(iceberg_gw, user, sql)
    reference_columns, reference = query(embedded, user, sql)
    assert reference, "the reference query returns no rows: it would not compare anything"
    assert columns == reference_columns
    assert sorted(on_spark) == sorted(reference)


def test_iceberg_on_spark_keeps_hidden_columns_and_dave_out(iceberg_gw):
    r = psql(iceberg_gw, "alice", "SELECT ssn FROM hr.employees")
    assert r.returncode != 0 and "42501" in r.stderr and r.stdout == "", r.stderr
    for sql in ["SELECT * FROM sales.orders", "SELECT name FROM hr.employees"]:
        r = psql(iceberg_gw, "dave", sql)
        assert r.returncode != 0 and "42501" in r.stderr and r.stdout == "", r.stderr
    # The statement's own view of the table is no name a user can reach.
    r = psql(iceberg_gw, "alice", "SELECT * FROM lakegate_0_abc_0")
    assert r.returncode != 0 and r.stdout == "", r.stderr


def test_a_commit_through_the_iceberg_catalog_is_read_by_the_next_statement_on_spark(iceberg_gw, spark):
    import pyarrow as pa

    marker = f"iceberg_probe_{uuid.uuid4().hex[:12]}"
    count = f"SELECT count(*) AS {marker} FROM hr.employees"
    with connect(iceberg_gw, "alice", autocommit=True) as c:
        (before,) = c.execute(count).fetchone()
        # HR commits a new employee with PyIceberg, writing the data file through the S3 front.
        table = iceberg_catalog(iceberg_gw, "carol").load_table(("hr", "employees"))
        row = {"id": 7001, "name": "Iris", "department": "data", "salary": Decimal("99.00"), "ssn": "999-00-7001"}
        table.append(pa.Table.from_pylist([row], schema=table.schema().as_arrow()))
        # The very next statement reads the new snapshot, governed as before: no salary, no ssn for alice.
        assert c.execute(count).fetchone() == (before + 1,)
        assert c.execute("SELECT * FROM hr.employees WHERE id = 7001").fetchall() == [(7001, "Iris", "data")]
    # Spark ran them, tagged with her name.
    jobs = eventually("the statements' Spark jobs in the event log", lambda: jobs_of(spark, marker), timeout=60)
    for start, _ in jobs.values():
        assert [t.split("_Tag_", 1)[1] for t in job_tags(start) if "_Tag_lakegate-user=" in t] == ["lakegate-user=alice"]


def test_statements_at_once_on_an_iceberg_table_each_read_their_own_view_of_it(iceberg_gw, embedded):
    """Each statement names its own view of the table in Lakegate's one Spark session: none drops or replaces
    another's while it is being planned."""
    from concurrent.futures import ThreadPoolExecutor

    sql = "SELECT customer, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY customer ORDER BY customer"
    expected = query(embedded, "alice", sql)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: query(iceberg_gw, "alice", sql), range(12)))
    assert all(a == expected for a in answers)


def test_writes_to_an_iceberg_table_on_spark_are_0A000_and_leave_no_file_behind(iceberg_gw):
    table = iceberg_catalog(iceberg_gw, "carol").load_table(("hr", "employees"))
    snapshot = table.current_snapshot().snapshot_id
    store = iceberg_gw.data_dir / "store"

    def stored():
        """The store's files, less the key index's journal files, which come and go."""
        return sorted(p for p in store.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal")))

    files_before = stored()
    for write in ["INSERT INTO hr.employees (id, name, department) VALUES (7101, 'No', 'data')",
                  "UPDATE hr.employees SET department = 'ops' WHERE id = 1",
                  "DELETE FROM hr.employees WHERE id = 1"]:
        with connect(iceberg_gw, "carol", autocommit=True) as c:
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                c.execute(write)
            assert c.execute("SELECT count(*) FROM hr.employees WHERE id = 7101").fetchone() == (0,)
    assert iceberg_catalog(iceberg_gw, "carol").load_table(("hr", "employees")).current_snapshot().snapshot_id \
        == snapshot
    assert stored() == files_before


# ---------------------------------------------------------------- TLS to Spark Connect


class GrpcTlsProxy:
    """nginx ending TLS in front of a Spark Connect server, as an ingress or a service mesh does in a deployment:
    Spark Connect itself serves plain gRPC only, and its clients' `use_ssl=true` expects such a proxy."""

    def __init__(self, root, certs, upstream_port):
        self.root, self.port, self.mtls_port, self.ca = root, free_port(), free_port(), certs / "ca.crt"
        self.client_cert, self.client_key = certs / "client.crt", certs / "client.key"
        (root / "tmp").mkdir()
        conf = root / "nginx.conf"
        conf.write_text(f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{}}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl http2;
        ssl_certificate {certs}/server.crt;
        ssl_certificate_key {certs}/server.key;
        location / {{
            grpc_pass grpc://127.0.0.1:{upstream_port};
            grpc_read_timeout 1h;
            grpc_send_timeout 1h;
        }}
    }}
    # The same, for clients with a certificate of the dev CA only (mutual TLS).
    server {{
        listen 127.0.0.1:{self.mtls_port} ssl http2;
        ssl_certificate {certs}/server.crt;
        ssl_certificate_key {certs}/server.key;
        ssl_client_certificate {certs}/ca.crt;
        ssl_verify_client on;
        location / {{
            grpc_pass grpc://127.0.0.1:{upstream_port};
        }}
    }}
}}
""")
        self.process = subprocess.Popen(["nginx", "-p", str(root), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_for_port(self.port)
            wait_for_port(self.mtls_port)
        except Exception:
            self.stop()
            raise

    def requests(self):
        """The gRPC calls nginx passed on (its access log's request lines)."""
        return (self.root / "access.log").read_text().count("/spark.connect.SparkConnectService/")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)


def dev_certs(root):
    """A development CA and a server certificate for 127.0.0.1 (certs/gen-dev.sh)."""
    subprocess.run(["bash", str(REPO / "certs" / "gen-dev.sh"), str(root), "127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    return root


@pytest.fixture(scope="module")
def tls_proxy(spark, tmp_path_factory):
    proxy = GrpcTlsProxy(tmp_path_factory.mktemp("grpc-tls"), dev_certs(tmp_path_factory.mktemp("certs")),
                         spark.port)
    yield proxy
    proxy.stop()


def spark_over_tls(start_lakegate, policies, remote, token_file, ca_file, client=None):
    identity = f', client_cert = "{client[0]}", client_key = "{client[1]}"' if client else ""
    return start_lakegate(env={
        "LAKEGATE__POLICY__DIR": str(policies),
        "LAKEGATE__SQL__SPARK": f'[{{name = "spark", remote = "{remote}", token_file = "{token_file}", '
                                f'tls = true, ca_file = "{ca_file}"{identity}}}]',
    })


def test_over_tls_alice_gets_what_she_gets_over_plain_grpc(gw, spark, tls_proxy, policies, start_lakegate,
                                                           demo_files):
    lg = spark_over_tls(start_lakegate, policies, f"sc://127.0.0.1:{tls_proxy.port}", spark.token_file,
                        tls_proxy.ca)
    sql = "SELECT order_id, customer, amount, card_number FROM sales.orders ORDER BY order_id"
    over_tls = query(lg, "alice", sql)
    assert over_tls == query(gw, "alice", sql)
    assert len(over_tls[1]) == len(eu_orders(demo_files)) == 12
    assert all(MASKED_CARD.fullmatch(row[3]) for row in over_tls[1])
    # The statements went through the proxy, not around it.
    assert tls_proxy.requests() > 0


def test_a_server_certificate_of_another_ca_is_refused_with_08006(spark, tls_proxy, policies, start_lakegate,
                                                                  tmp_path):
    stranger = dev_certs(tmp_path / "stranger")
    before = tls_proxy.requests()
    lg = spark_over_tls(start_lakegate, policies, f"sc://127.0.0.1:{tls_proxy.port}", spark.token_file,
                        stranger / "ca.crt")
    stderr = unusable_spark_answers_08006_and_the_session_goes_on(lg)
    assert spark.token not in stderr
    # No call got past the handshake, so the token never left Lakegate.
    assert tls_proxy.requests() == before


def test_a_proxy_that_asks_for_a_client_certificate_gets_lakegates(gw, spark, tls_proxy, policies,
                                                                   start_lakegate):
    remote = f"sc://127.0.0.1:{tls_proxy.mtls_port}"
    # Without one, the handshake fails: 08006, as for any Spark Lakegate cannot reach.
    lg = spark_over_tls(start_lakegate, policies, remote, spark.token_file, tls_proxy.ca)
    unusable_spark_answers_08006_and_the_session_goes_on(lg)
    # With the certificate and key of `client_cert`/`client_key`, the same answers as over plain gRPC.
    lg = spark_over_tls(start_lakegate, policies, remote, spark.token_file, tls_proxy.ca,
                        client=(tls_proxy.client_cert, tls_proxy.client_key))
    sql = "SELECT order_id, amount FROM sales.orders ORDER BY order_id"
    assert query(lg, "alice", sql) == query(gw, "alice", sql)


def test_tls_to_a_plain_grpc_port_is_08006(spark, tls_proxy, policies, start_lakegate):
    lg = spark_over_tls(start_lakegate, policies, f"sc://127.0.0.1:{spark.port}", spark.token_file, tls_proxy.ca)
    unusable_spark_answers_08006_and_the_session_goes_on(lg)


# ---------------------------------------------------------------- a client that goes away

# A cross join of alice's 12 orders with itself 10 times: Spark counts 12^10 rows, minutes of work on a small
# machine (9 times already takes about 10 s), and sends nothing before it is done.
SLOW = "SELECT count(*) AS {marker} FROM sales.orders a1" + "".join(f", sales.orders a{i}" for i in range(2, 11))


def slow_statement_stopped_by(gw, spark, stop):
    """Runs the slow statement as alice, calls `stop(conn)` while its Spark job runs, and returns the error the
    client got; the job must end without succeeding."""
    marker = f"slow_probe_{uuid.uuid4().hex[:12]}"
    conn = connect(gw, "alice")
    outcome = {}

    def run():
        try:
            outcome["rows"] = conn.execute(SLOW.format(marker=marker)).fetchall()
        except psycopg.Error as e:
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    eventually("the slow statement's Spark job", lambda: jobs_of(spark, marker), timeout=60)
    time.sleep(3)
    assert worker.is_alive() and not outcome, "the slow statement ended before it was stopped"
    stop(conn)
    worker.join(30)
    assert "error" in outcome
    assert_stopped_on_spark(spark, marker)
    return conn, outcome["error"]


def jobs_of(spark, marker):
    """{job id: (start, end or None)} of the Spark jobs of the statement whose text holds `marker`."""
    return {job: (start, end) for job, (start, end) in spark.jobs().items()
            if marker in start.get("Properties", {}).get("callSite.long", "")}


def assert_stopped_on_spark(spark, marker):
    """Every Spark job of the statement ends, and not every one of them succeeded: the statement was stopped."""
    def all_ended():
        jobs = jobs_of(spark, marker)
        return jobs if all(end is not None for _, end in jobs.values()) else None

    jobs = eventually("the end of the slow statement's Spark jobs", all_ended, timeout=60)
    results = [end["Job Result"]["Result"] for _, end in jobs.values()]
    assert any(r != "JobSucceeded" for r in results), results


def test_a_cancelled_statement_stops_its_spark_job_and_the_session_goes_on(gw, spark):
    # psycopg sends PostgreSQL's CancelRequest with the key the gateway gave the connection.
    conn, error = slow_statement_stopped_by(gw, spark, lambda conn: conn.cancel())
    assert isinstance(error, psycopg.errors.QueryCanceled), error
    assert error.sqlstate == "57014"
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM sales.orders").fetchone() == (12,)


def test_a_client_that_goes_away_mid_query_interrupts_the_spark_job(gw, spark):
    def go_away(conn):
        # The client's socket is shut down under it, as when a process dies or a network drops.
        with socket.socket(fileno=os.dup(conn.fileno())) as s:
            s.shutdown(socket.SHUT_RDWR)

    slow_statement_stopped_by(gw, spark, go_away)
