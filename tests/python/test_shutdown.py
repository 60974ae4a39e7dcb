"""A rollout's SIGTERM as real SQL clients see it: psycopg's idle session is ended the way PostgreSQL ends it on a
shutdown (AdminShutdown, SQLSTATE 57P01), and the trino client fetches the query it opened to its last row while
Lakegate drains. In both cases `lakegate serve` then exits 0 with every statement in its audit log."""

import signal

import psycopg
import pytest
import requests
import trino

from conftest import Lakegate, eventually
from sql_support import on_postgres


@pytest.fixture
def server():
    lg = Lakegate(env={"LAKEGATE__SQL__TRINO_PAGE_ROWS": "1"})
    yield lg
    lg.stop()


def readyz_draining(lg):
    r = requests.get(f"{lg.control_url}/readyz", timeout=5)
    return r.status_code == 503 and r.json().get("status") == "draining"


def draining_or_gone(lg):
    try:
        return readyz_draining(lg)
    except requests.ConnectionError:
        return True


def test_psycopg_sees_admin_shutdown_on_an_idle_session_and_lakegate_exits_0(server):
    token = server.token("alice", ["analysts"], {"region": "EU"})
    with psycopg.connect(host="127.0.0.1", port=server.sql_port, dbname="lakegate", user="alice", password=token,
                         sslmode="disable", autocommit=True) as conn:
        assert len(conn.execute("select order_id from sales.orders").fetchall()) == 12
        server.process.send_signal(signal.SIGTERM)
        # The signal is handled asynchronously: a statement sent before the drain starts would still run. With only
        # an idle session open the drain may already be over, so the process having exited counts as well.
        eventually("the drain to start", lambda: server.process.poll() is not None or draining_or_gone(server))
        with pytest.raises(psycopg.errors.AdminShutdown):
            conn.execute("select order_id from sales.orders").fetchall()
    assert server.process.wait(timeout=60) == 0
    selects = [e for e in server.audit_events() if e["action"] == "sql:Select"]
    assert len(selects) == 1 and selects[0]["sql"]["rows"] == 12


def test_the_trino_client_fetches_its_open_query_to_the_end_while_lakegate_drains(server):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + server.token("bob", ["analysts"], {"region": "US"})
    conn = trino.dbapi.connect(host="127.0.0.1", port=server.control_port, user="bob", http_scheme="http",
                               http_session=session)
    cur = conn.cursor()
    cur.execute("select order_id, region from sales.orders")
    first = cur.fetchone()
    server.process.send_signal(signal.SIGTERM)
    eventually("/readyz to report the drain", lambda: readyz_draining(server))
    rows = [first] + cur.fetchall()
    assert len(rows) == 12 and {r[1] for r in rows} == {"US"}
    assert server.process.wait(timeout=60) == 0
    (select,) = [e for e in server.audit_events() if e["action"] == "sql:Select"]
    assert select["sql"]["rows"] == 12 and not (select["outcome"] or {}).get("incomplete")


@pytest.mark.parametrize("durability", ["batch", "sync"])
def test_a_block_left_open_at_the_signal_is_rolled_back_and_its_rollback_is_in_the_log(
        durability, postgres, tmp_path):
    # psycopg opens a block with the first statement; at REPEATABLE READ the block holds a PostgreSQL connection of
    # its own from there on (as it would from its first write). The drain
    # ends the idle session, which rolls the block back: the log must say so before the process exits, including
    # with `sync` durability, where the rollback's record waits for its decision record to reach the disk first.
    lg = on_postgres(tmp_path, postgres, env={"LAKEGATE__AUDIT__DURABILITY": durability})
    try:
        token = lg.token("alice", ["analysts"], {"region": "EU"})
        conn = psycopg.connect(host="127.0.0.1", port=lg.sql_port, dbname="lakegate", user="alice", password=token,
                               sslmode="disable")
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            assert len(conn.execute("select order_id from sales.orders").fetchall()) == 2
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            lg.process.send_signal(signal.SIGTERM)
            assert lg.process.wait(timeout=60) == 0
        finally:
            conn.close()  # without a COMMIT, which `with` would send
        events = lg.audit_events()
    finally:
        lg.stop()
    (select,) = [e for e in events if e["action"] == "sql:Select" and e.get("stage") != "decision"]
    block = select["sql"]["transaction"]
    ends = [e for e in events if e["sql"] and e["sql"].get("transaction") == block and e["action"] == "sql:Rollback"]
    assert [(e["sql"]["original"], e["sql"]["committed"], e.get("stage")) for e in ends] == (
        [("ROLLBACK (the session ended inside the block)", False, None)] if durability == "batch" else
        [("ROLLBACK (the session ended inside the block)", False, "decision"),
         ("ROLLBACK (the session ended inside the block)", False, "outcome")])
