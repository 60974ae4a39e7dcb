"""A value is a value: quotes, backslashes and comment markers in what a client sends stay inside it.

Lakegate writes values into statement text in three places: the literals of a text it runs as its kept shape
(psql's simple protocol), the parameters of a statement it sends on as text (a write, a parameter where a literal
would name a column by position, every statement on the embedded engine), and the catalog queries it answers
itself. sqlparser's printer leaves a quote single when a backslash comes before it, so the value
`x\\' UNION SELECT ssn FROM hr.employees --` was once written as a string ending at the backslash followed by a
UNION of the raw table: an analyst read every social security number. The rewriter's own printing was safe (its
text must read back) but refused such strings in a client's text outright. Each test sends such values the way a
client does, on both backends, and checks that they were compared as values and that nothing hidden showed.
"""

import os
import re
import subprocess

import psycopg
import pytest

from sql_support import gw, token  # noqa: F401  (gw is a fixture: the gateway on both backends)

SSN = re.compile(r"\d{3}-\d{2}-\d{4}")

# Each one ends its string early if a backslash is taken to escape the quote after it, or a doubled quote is
# written as it is; the rest would read as a UNION of the hidden column, or as a comment.
HOSTILE = [
    "x\\' UNION SELECT ssn FROM hr.employees --",
    "x\\'' UNION SELECT ssn FROM hr.employees --",
    "x'' UNION SELECT ssn FROM hr.employees --",
    "x\\",
    "'; SELECT ssn FROM hr.employees; --",
]


def quoted(value):
    """`value` as a standard SQL string literal, as a client writes it."""
    return "'" + value.replace("'", "''") + "'"


def psql_file(gw, user, sql, tmp_path):
    """Runs `sql` (several statements) through psql's simple protocol, one session."""
    script = tmp_path / "script.sql"
    script.write_text(sql)
    env = dict(os.environ, PGPASSWORD=token(gw, user), PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={gw.sql_port} dbname=lakegate user={user} sslmode=disable"
    return subprocess.run(["psql", dsn, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
                          env=env, capture_output=True, text=True, timeout=60)


def connect(gw, user):
    return psycopg.connect(host="127.0.0.1", port=gw.sql_port, dbname="lakegate", user=user,
                           password=token(gw, user), sslmode="disable", connect_timeout=10)


def employees(gw):
    """How many employees alice sees (all of them: her permit hides columns, not rows)."""
    with connect(gw, "alice") as c:
        return c.execute("select count(*) from hr.employees").fetchone()[0]


def test_a_literal_of_a_text_run_as_its_kept_shape_is_compared_as_written(gw, tmp_path):
    # Two texts of one shape keep it; every later text of the shape runs as the kept rewrite with its literals.
    kept = ["select count(*) from hr.employees where name <> 'a';", "select count(*) from hr.employees where name <> 'b';"]
    hostile = [f"select count(*) from hr.employees where name <> {quoted(v)};" for v in HOSTILE]
    r = psql_file(gw, "alice", "\n".join(kept + hostile) + "\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert not SSN.search(r.stdout), r.stdout
    # No employee has any of those names: each count is all of them.
    assert r.stdout.split() == [str(employees(gw))] * (len(kept) + len(HOSTILE)), r.stdout


@pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "server-side prepared"])
def test_a_bound_text_parameter_is_compared_as_sent(gw, prepare):
    with connect(gw, "alice") as c:
        for value in HOSTILE:
            rows = c.execute("select name from hr.employees where name = %s", (value,), prepare=prepare).fetchall()
            assert rows == [], (value, rows)


def test_a_parameter_sent_on_inside_the_text_is_compared_as_sent(gw):
    # A parameter in a GROUP BY item is not sent apart (a literal there would name a column by position), so on
    # PostgreSQL too the statement reaches the backend as text with its values written in.
    with connect(gw, "alice") as c:
        departments = {r[0] for r in c.execute("select department from hr.employees").fetchall()}
        for value in HOSTILE:
            rows = c.execute("select department from hr.employees where name <> %s group by department, length(%s)",
                             (value, "k")).fetchall()
            assert {r[0] for r in rows} == departments, (value, rows)
            assert not any(SSN.search(str(r)) for r in rows), rows


def test_a_value_that_matches_is_found_with_its_quotes_and_backslashes(gw):
    # The value is the one compared: a string built from the hostile text equals it on the backend.
    with connect(gw, "alice") as c:
        for value in HOSTILE:
            got = c.execute("select %s::text = %s::text, length(%s::text)", (value, value, value)).fetchone()
            assert got == (True, len(value)), (value, got)


def test_a_string_with_a_backslash_before_a_quote_in_a_clients_own_text_is_read_as_written(gw):
    # sqlparser's printer alone writes such a string as one ending at the backslash, so the rewritten text did not
    # read back and the gateway refused the query (0A000). Lakegate writes the string itself: the query runs, and
    # the string is the value the client wrote.
    everyone = employees(gw)
    with connect(gw, "alice") as c:
        for value in HOSTILE + ["C:\\dir\\'s", "it''s"]:
            got = c.execute(f"select count(*), {quoted(value)} from hr.employees where name <> {quoted(value)}")
            assert got.fetchone() == (everyone, value), value


def test_a_catalog_query_holding_a_string_the_printer_would_end_early_is_answered_as_written(gw, tmp_path):
    for value in HOSTILE[:3]:
        sql = f"select count(*) from pg_catalog.pg_class where relname = {quoted(value)};\n"
        r = psql_file(gw, "alice", sql, tmp_path)
        assert r.returncode == 0 and r.stdout.split() == ["0"], (value, r.stdout, r.stderr)
    # An ordinary doubled quote is answered.
    r = psql_file(gw, "alice", "select count(*) from pg_catalog.pg_class where relname = 'o''brien';\n", tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["0"], r.stderr
