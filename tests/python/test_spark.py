"""Spark reads a governed table through the SQL gateway as the user whose token the pod was given.

Trusted identity propagation as a notebook platform does it: the notebook service (client `notebook`) exchanges
alice's token at the token service (RFC 8693) and writes the Lakegate token to a file, as the kubelet projects a
token into a Spark pod. The Spark job (pyspark in local mode, Spark's JDBC data source with Debian's pgJDBC) reads
that file and passes the token as the JDBC password. Spark then gets exactly the rows and columns alice gets through
psycopg, card numbers stay masked even in pushed-down filters, every statement Spark sends is audited as alice
through the notebook, and a forged or expired token fails the read with the PostgreSQL error, leaving the session
usable.

One SparkSession (one JVM, local[1]) serves the whole module: starting it is most of the module's time.
"""

import base64
import hashlib
import json
import re
from pathlib import Path

import psycopg
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from py4j.protocol import Py4JJavaError
from pyspark import SparkContext
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from conftest import Lakegate, demo_token, eventually

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
NOTEBOOK_SECRET = "notebook-secret-for-spark-tests"
MASKED_CARD = re.compile(r"\*{12}\d{4}")
ORDERS_COLUMNS = ["order_id", "customer", "region", "amount", "card_number"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gateway():
    """A server on the demo world whose token service knows the notebook client."""
    digest = hashlib.sha256(NOTEBOOK_SECRET.encode()).hexdigest()
    lg = Lakegate(config=f'[token_service]\nclients = [{{ id = "notebook", secret_sha256 = "{digest}" }}]\n')
    yield lg
    lg.stop()


def exchange_as_notebook(gw, subject_token):
    """The notebook service trades the user's token for a Lakegate token naming the user and itself."""
    r = requests.post(f"{gw.control_url}/oauth2/token", auth=("notebook", NOTEBOOK_SECRET), timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": subject_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    })
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def projected_token(gateway, tmp_path_factory):
    """Writes `token` (by default the user's propagated token) where a pod's projected token would be."""
    root = tmp_path_factory.mktemp("projected")

    def write(user, token=None):
        path = root / user / "token"
        path.parent.mkdir(exist_ok=True)
        path.write_text(token or exchange_as_notebook(gateway, demo_token(gateway, user)))
        path.chmod(0o600)
        return path

    return write


def debian_jdk17():
    homes = sorted(Path("/usr/lib/jvm").glob("java-17-openjdk-*"))
    if not homes or not JDBC_JAR.exists():
        pytest.fail("openjdk-17-jdk-headless and libpostgresql-jdbc-java are required: run scripts/install-test-deps")
    return homes[0]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A small local Spark with pgJDBC on its class path, bound to loopback."""
    scratch = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as env:
        # The JVM pyspark launches is chosen by JAVA_HOME (else `java` on PATH): pin the JDK the suite installs.
        env.setenv("JAVA_HOME", str(debian_jdk17()))
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[1]")
            .appName("lakegate-spark-test")
            .config("spark.jars", str(JDBC_JAR))
            .config("spark.driver.memory", "512m")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.default.parallelism", "1")
            .config("spark.local.dir", str(scratch / "local"))
            .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
            # Errors carry the JDBC driver's cause, as a notebook shows them.
            .config("spark.sql.pyspark.jvmStacktrace.enabled", "true")
            .getOrCreate()
        )
    yield session
    session.stop()
    # The JVM outlives stop(): end it, so it does not hold its memory for the rest of the suite.
    jvm = SparkContext._gateway
    if jvm is not None:
        jvm.shutdown()
        jvm.proc.stdin.close()  # the JVM exits when the Python side's pipe closes
        jvm.proc.wait(timeout=30)
        SparkContext._gateway = SparkContext._jvm = None


def read_governed(spark, gw, user, token_file, **options):
    """What the Spark job does: Spark's JDBC source, the token read from the projected file as the password."""
    reader = (
        spark.read.format("jdbc")
        .option("url", f"jdbc:postgresql://127.0.0.1:{gw.sql_port}/lakegate")
        .option("driver", "org.postgresql.Driver")
        .option("user", user)
        .option("password", Path(token_file).read_text().strip())
        .option("sslmode", "disable")  # a loopback listener takes the token over plain TCP; TLS is sslmode=require
    )
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load()


def psycopg_as(gw, user, sql):
    """The same query as `user` through psycopg with the user's own token: columns and sorted rows."""
    with psycopg.connect(host="127.0.0.1", port=gw.sql_port, dbname="lakegate", user=user,
                         password=demo_token(gw, user), sslmode="disable", connect_timeout=10) as c:
        cur = c.execute(sql)
        return [d.name for d in cur.description], sorted(cur.fetchall())


def rows_of(df):
    return sorted(tuple(r) for r in df.collect())


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_as_token_service(gw, payload):
    """Signs `payload` with the server's own token-service key, so that only the claims can be wrong."""
    key_file = max(p for p in (gw.data_dir / "keys" / "signing").iterdir() if not p.name.startswith("."))
    der = key_file.read_bytes()
    # RFC 8410: the 32-byte Ed25519 seed is an OCTET STRING inside the PKCS#8 privateKey OCTET STRING.
    seed_at = der.index(b"\x04\x22\x04\x20") + 4
    key = Ed25519PrivateKey.from_private_bytes(der[seed_at:seed_at + 32])
    header = {"typ": "JWT", "alg": "EdDSA", "kid": key_file.name}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


# ---------------------------------------------------------------- what Spark sees


def test_the_propagated_token_names_alice_with_the_notebook_as_actor(gateway, projected_token):
    c = claims(projected_token("alice").read_text())
    assert c["sub"] == "alice" and c["attrs"] == {"region": "EU"}
    assert c["act"]["sub"] == "notebook" and "act" not in c["act"]


def test_spark_gets_exactly_the_rows_and_columns_alice_gets_through_psycopg(gateway, spark, projected_token):
    df = read_governed(spark, gateway, "alice", projected_token("alice"), dbtable="sales.orders")
    columns, rows = psycopg_as(gateway, "alice", "select * from sales.orders")
    assert df.columns == columns == ORDERS_COLUMNS
    spark_rows = rows_of(df)
    assert spark_rows == rows  # Decimal compares by value: Spark's decimal(38,18) equals the wire's numeric
    assert len(spark_rows) == 12 and {r[2] for r in spark_rows} == {"EU"}


def test_the_rows_follow_the_token_not_the_session(gateway, spark, projected_token):
    alice = rows_of(read_governed(spark, gateway, "alice", projected_token("alice"), dbtable="sales.orders"))
    bob = rows_of(read_governed(spark, gateway, "bob", projected_token("bob"), dbtable="sales.orders"))
    assert bob == psycopg_as(gateway, "bob", "select * from sales.orders")[1]
    assert len(bob) == 12 and {r[2] for r in bob} == {"US"}
    assert not {r[0] for r in alice} & {r[0] for r in bob}


def test_a_partitioned_read_is_governed_in_every_partition(gateway, spark, projected_token):
    df = read_governed(spark, gateway, "alice", projected_token("alice"), dbtable="sales.orders",
                       partitionColumn="order_id", lowerBound="1", upperBound="25", numPartitions="3")
    assert df.rdd.getNumPartitions() == 3
    assert rows_of(df) == psycopg_as(gateway, "alice", "select * from sales.orders")[1]


def test_card_numbers_stay_masked_even_in_pushed_down_filters(gateway, spark, projected_token):
    df = read_governed(spark, gateway, "alice", projected_token("alice"), dbtable="sales.orders")
    cards = [r.card_number for r in df.select("card_number").collect()]
    assert len(cards) == 12 and all(MASKED_CARD.fullmatch(c) for c in cards), cards
    # Order 1 is an EU order; its clear number is in the demo data. Spark pushes the equality down to the
    # gateway, which evaluates it on the masked column: the clear value matches nothing, the masked one matches.
    assert df.filter(df.card_number == "4000001234567891").count() == 0
    assert [r.order_id for r in df.filter(df.card_number == "************7891").collect()] == [1]
    pushed = eventually("the pushed-down statement in the audit", lambda: [
        e["sql"] for e in gateway.audit_events() if e["sql"] and "= '4000001234567891'" in e["sql"]["original"]])
    assert [p["rows"] for p in pushed] == [0]


def test_hidden_columns_are_absent_and_naming_one_is_permission_denied(gateway, spark, projected_token):
    token_file = projected_token("alice")
    df = read_governed(spark, gateway, "alice", token_file, dbtable="hr.employees")
    columns, rows = psycopg_as(gateway, "alice", "select * from hr.employees")
    assert df.columns == columns == ["id", "name", "department"]
    assert rows_of(df) == rows and len(rows) == 8
    with pytest.raises(Py4JJavaError) as error:
        read_governed(spark, gateway, "alice", token_file, query="select name, ssn from hr.employees")
    assert "PSQLException: ERROR: permission denied for column ssn" in str(error.value)


# ---------------------------------------------------------------- audit


def test_every_statement_spark_sends_is_audited_as_alice_through_the_notebook(gateway, spark, projected_token):
    before = len(gateway.audit_events())
    df = read_governed(spark, gateway, "alice", projected_token("alice"), query="select * from sales.orders")
    assert len(df.collect()) == 12

    def spark_events():
        events = [e for e in gateway.audit_events()[before:] if e["front"] == "sql"]
        return events if any(e["sql"] and e["sql"]["rows"] == 12 for e in events) else None

    events = eventually("the audit events of Spark's statements", spark_events)
    # Spark sends two statements: the schema probe (`... WHERE 1=0`) and the read; both are alice's.
    assert len(events) >= 2
    for e in events:
        assert (e["action"], e["decision"]) == ("sql:Select", "allow")
        assert e["principal"]["subject"] == "alice" and e["principal"]["issuer"] == "lakegate-dev"
        assert e["actors"] == [{"issuer": gateway.control_url, "subject": "notebook"}]
        assert "SPARK_GEN_SUBQ" in e["sql"]["original"] and "'EU'" in e["sql"]["rewritten"]
    read = next(e for e in events if e["sql"]["rows"] == 12)
    assert read["sql"]["tables"] == ["sales.orders"]
    assert "sales.orders.card_number" in read["sql"]["masks"]


# ---------------------------------------------------------------- refusals


def forged(gw):
    """alice's propagated token with her region changed to US; the signature is the original one."""
    header, payload, signature = exchange_as_notebook(gw, demo_token(gw, "alice")).split(".")
    c = claims(f"{header}.{payload}.")
    c["attrs"]["region"] = "US"
    return f"{header}.{b64url(json.dumps(c).encode())}.{signature}"


def expired(gw):
    """A token the token service could have issued two hours ago, expired an hour ago (well past the leeway)."""
    c = claims(exchange_as_notebook(gw, demo_token(gw, "alice")))
    c.update(iat=c["iat"] - 7200, nbf=c["nbf"] - 7200, exp=c["iat"] - 3600)
    return sign_as_token_service(gw, c)


@pytest.mark.parametrize("make_token,reason", [(forged, "signature does not verify"), (expired, "token has expired")])
def test_a_bad_token_fails_the_read_with_the_postgresql_error_and_the_session_lives_on(
        gateway, spark, projected_token, make_token, reason):
    token = make_token(gateway)
    token_file = projected_token(f"alice-{make_token.__name__}", token)
    with pytest.raises(AnalysisException) as error:
        read_governed(spark, gateway, "alice", token_file, dbtable="sales.orders")
    assert error.value.getCondition() == "FAILED_JDBC.CONNECTION"
    message = str(error.value)
    cause = re.search(r"Caused by: org\.postgresql\.util\.PSQLException: (.*)", message)
    assert cause, message
    assert cause.group(1) == ("FATAL: password authentication failed: "
                              f'the password must be a valid token for user "alice" ({reason})')
    assert token not in message and token.split(".")[2] not in message
    # The same session goes on to read with a good token.
    assert read_governed(spark, gateway, "alice", projected_token("alice"), dbtable="sales.orders").count() == 12
