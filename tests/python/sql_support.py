"""What the SQL catalog tests share: the demo users' rights, the gateway on both backends, the leak check.

`gw` runs the gateway twice per module: on the embedded engine (the demo warehouse) and with both demo tables
moved to a real PostgreSQL that also holds a table in no catalog. `VISIBLE` is what each user may see;
`assert_nothing_hidden` checks a tool's whole output against it.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, Lakegate, demo_token

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
HIDDEN_FROM_ANALYSTS = ("salary", "ssn")

# What each user may see: {schema.table: [visible columns in catalog order]}.
VISIBLE = {
    "alice": {
        "sales.orders": ["order_id", "customer", "region", "amount", "card_number"],
        "hr.employees": ["id", "name", "department"],
    },
    "carol": {"hr.employees": ["id", "name", "department", "salary", "ssn"]},
    "dave": {},
}
VISIBLE["bob"] = VISIBLE["alice"]

# Idempotent: the PostgreSQL server is one per session, and every module that uses `gw` sets it up again.
PG_SCHEMA = """
DROP SCHEMA IF EXISTS sales CASCADE; DROP SCHEMA IF EXISTS hr CASCADE;
CREATE SCHEMA sales; CREATE SCHEMA hr;
CREATE TABLE sales.orders (order_id bigint, customer text, region text, amount numeric(12,2), card_number text);
INSERT INTO sales.orders VALUES (1, 'Acme', 'EU', 10.50, '4000000000000001'),
  (2, 'Globex', 'US', 20.00, '4000000000000002'), (3, 'Hooli', 'EU', 30.25, '4000000000000003');
CREATE TABLE hr.employees (id bigint, name text, department text, salary numeric(12,2), ssn text);
INSERT INTO hr.employees VALUES (1, 'Ada', 'engineering', 56250.00, '101-11-1111');
CREATE TABLE hr.secret_bonuses (id bigint, bonus numeric);
DO $$ BEGIN CREATE ROLE lakegate_backend LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA sales, hr TO lakegate_backend;
GRANT SELECT ON sales.orders, hr.employees TO lakegate_backend;
"""


def on_postgres(tmp_root, pg, env=None, backend=""):
    """A gateway whose demo tables live on `pg` (the demo policies, catalog entries moved to backend `warehouse`),
    with `env` added to its environment and `backend` to the backend's settings (`key = value, ...`).

    The PostgreSQL database also holds a table that is in no catalog (hr.secret_bonuses): it must never show."""
    pg.psql(PG_SCHEMA)
    policies = tmp_root / "policies"
    shutil.copytree(REPO / "policies", policies)
    catalog = policies / "catalog.toml"
    text = catalog.read_text()
    assert text.count('backend = "embedded"') == 2
    catalog.write_text(text.replace('backend = "embedded"', 'backend = "warehouse"'))
    url = f"host=127.0.0.1 port={pg.port} user=lakegate_backend dbname=postgres"
    return Lakegate(env={
        "LAKEGATE__POLICY__DIR": str(policies),
        "LAKEGATE__SQL__POSTGRES": f'[{{name = "warehouse", url = "{url}", pool_size = 2{", " if backend else ""}{backend}}}]',
        **(env or {}),
    })


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def gw(request, tmp_path_factory):
    if request.param == "embedded":
        lg = Lakegate()
    else:
        pg = request.getfixturevalue("postgres")
        lg = on_postgres(tmp_path_factory.mktemp("pg-policies"), pg)
    yield lg
    lg.stop()


USERS = ["alice", "carol", "dave"]


def token(gw, user):
    return demo_token(gw, user)


def visible_tables(user):
    return sorted(VISIBLE[user])


def visible_schemas(user):
    return sorted({t.split(".")[0] for t in VISIBLE[user]})


def assert_nothing_hidden(user, text):
    """Nothing the user may not see appears in `text` (a tool's whole output)."""
    visible = VISIBLE[user]
    if "sales.orders" not in visible:
        assert "orders" not in text and "card_number" not in text, text
    if "hr.employees" not in visible:
        assert "employees" not in text, text
    for column in HIDDEN_FROM_ANALYSTS:
        if column not in visible.get("hr.employees", []):
            assert column not in text, text
    assert "secret_bonuses" not in text, text


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory):
    if not JDBC_JAR.exists() or shutil.which("javac") is None:
        pytest.fail("pgJDBC (libpostgresql-jdbc-java) and javac are required: run scripts/install-test-deps")
    out = tmp_path_factory.mktemp("jdbc")
    subprocess.run(["javac", "-d", str(out), str(REPO / "tests/java/LakegateJdbc.java")], check=True, timeout=120)
    return out
