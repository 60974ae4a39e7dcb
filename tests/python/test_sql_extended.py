"""The extended query protocol message by message, on both backends.

Drivers send a statement as Parse, Bind, Describe, Execute, Sync in one go (libpq's PQexecParams, pgJDBC,
psycopg 3). The gateway runs a governed query at the Describe of its portal, so that the backend is asked once
for the columns and the rows; these tests hold it to what PostgreSQL does with the same messages: each statement
runs once and is recorded once, a row limit pages through the rows, each portal gets its own rows, answers held
for the batch's Sync come at a Flush, and a portal described but never executed costs nothing that stays (on
PostgreSQL, the pool has two connections: a statement that kept one would stall the third). The client here is the protocol itself, so that the sequences are exactly
the ones a driver may send, including those no driver library lets a test choose.
"""

import os
import socket
import struct
import subprocess

import pytest

from conftest import BINARY, eventually, free_port
from sql_support import gw, token  # noqa: F401  (gw is a fixture: the gateway on both backends)

# The demo data differs between the backends: every answer is compared with the simple protocol's for the same
# statement with its parameter written in.
ORDERS_AFTER = "select order_id, customer from sales.orders where order_id > $1 order by order_id limit 2"


class Wire:
    """A PostgreSQL frontend speaking protocol 3.0 over a plain socket, one message at a time."""

    def __init__(self, gw, user, ahead=b""):
        """Connected and authenticated as `user`; `ahead` is sent in the same write as the password."""
        self.sock = socket.create_connection(("127.0.0.1", gw.sql_port), timeout=30)
        params = b"user\0" + user.encode() + b"\0database\0lakegate\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 3 << 16) + params)
        kind, body = self.read()
        assert (kind, body) == (b"R", struct.pack("!i", 3)), f"expected a cleartext password request: {kind} {body}"
        self.send(b"p", token(gw, user).encode() + b"\0", ahead)
        # Up to ReadyForQuery, or the error that ends the session (and the connection with it).
        while (message := self.read())[0] not in (b"Z", b"E"):
            pass
        assert message[0] == b"Z", f"authentication failed: {message[1]}"

    def close(self):
        self.send(b"X", b"")
        self.sock.close()

    def send(self, kind, body, ahead=b""):
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body + ahead)

    def fatal(self):
        """The SQLSTATE and message of the FATAL error that ends the session; the server then closes."""
        kind, body = self.read()
        fields = dict((f[:1], f[1:].decode()) for f in body.split(b"\0") if f)
        assert kind == b"E" and fields.get(b"S") == "FATAL", (kind, fields)
        assert self.sock.recv(1) == b"", "the connection stays open"
        return fields[b"C"], fields[b"M"]

    @classmethod
    def unauthenticated(cls, sock):
        """A frontend on a socket that has sent what it sent and authenticated as nobody."""
        wire = cls.__new__(cls)
        wire.sock = sock
        return wire

    def exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def read(self):
        header = self.exactly(5)
        return header[:1], self.exactly(struct.unpack("!i", header[1:])[0] - 4)

    def until_ready(self):
        """Every message up to ReadyForQuery, which is left out."""
        messages = []
        while (message := self.read())[0] != b"Z":
            messages.append(message)
        return messages

    def parse(self, sql, name=""):
        self.send(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))

    def bind(self, *params, portal="", statement=""):
        body = portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!hh", 0, len(params))
        for p in params:
            value = str(p).encode()
            body += struct.pack("!i", len(value)) + value
        self.send(b"B", body + struct.pack("!h", 0))

    def describe_portal(self, portal=""):
        self.send(b"D", b"P" + portal.encode() + b"\0")

    def describe_statement(self, name=""):
        self.send(b"D", b"S" + name.encode() + b"\0")

    def execute(self, portal="", max_rows=0):
        self.send(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))

    def sync(self):
        self.send(b"S", b"")

    def simple(self, sql):
        """The rows and the command tag of a simple Query."""
        self.send(b"Q", sql.encode() + b"\0")
        answer = shape(self.until_ready())
        assert answer and answer[0][0] == "T" and answer[-1][0] == "C", answer
        return answer[1:]


def columns(body):
    """The column names of a RowDescription."""
    count, = struct.unpack("!h", body[:2])
    names, rest = [], body[2:]
    for _ in range(count):
        name, rest = rest.split(b"\0", 1)
        names.append(name.decode())
        rest = rest[18:]
    return names


def row(body):
    """The values of a DataRow, as text."""
    count, = struct.unpack("!h", body[:2])
    values, rest = [], body[2:]
    for _ in range(count):
        n, = struct.unpack("!i", rest[:4])
        values.append(None if n < 0 else rest[4:4 + n].decode())
        rest = rest[4 + max(n, 0):]
    return tuple(values)


def shape(messages):
    """The messages as a driver sees them: ('T', names), ('D', values), ('C', tag), ('E', sqlstate) or the kind."""
    out = []
    for kind, body in messages:
        k = kind.decode()
        if k == "T":
            out.append((k, columns(body)))
        elif k == "D":
            out.append((k, row(body)))
        elif k == "C":
            out.append((k, body.rstrip(b"\0").decode()))
        elif k == "E":
            fields = dict((f[:1], f[1:].decode()) for f in body.split(b"\0") if f)
            out.append((k, fields.get(b"C")))
        else:
            out.append(k)
    return out


@pytest.fixture
def alice(gw):
    wire = Wire(gw, "alice")
    yield wire
    wire.close()


def assert_the_session_goes_on(wire):
    """The next statement through the extended protocol answers what the simple protocol does."""
    wire.parse(ORDERS_AFTER)
    wire.bind(1)
    wire.describe_portal()
    wire.execute()
    wire.sync()
    assert shape(wire.until_ready())[3:] == wire.simple(ORDERS_AFTER.replace("$1", "1"))


def records(gw, marker):
    """The records of the statements whose text holds `marker` (the access records, not the decisions that
    durability `sync` writes before them)."""
    return [e for e in gw.audit_events()
            if e.get("sql") and marker in e["sql"]["original"] and e.get("stage") != "decision"]


def test_a_described_and_executed_portal_runs_once_and_is_recorded_once(gw, alice):
    marker = "once_" + os.urandom(4).hex()
    sql = f"select order_id as {marker}, customer from sales.orders where amount > $1 order by order_id"
    rows = alice.simple(sql.replace("$1", "0"))
    alice.parse(sql)
    alice.bind(0)
    alice.describe_portal()
    alice.execute()
    alice.sync()
    assert shape(alice.until_ready()) == ["1", "2", ("T", [marker, "customer"]), *rows]
    # Two records: the simple Query and the extended one, each with all its rows.
    event = eventually("the statements' records", lambda: len(records(gw, marker)) >= 2 and records(gw, marker))
    assert len(event) == 2 and [e["sql"]["rows"] for e in event] == [len(rows) - 1] * 2, event
    assert not any((e["outcome"] or {}).get("incomplete") for e in event), event


def test_a_portal_described_but_never_executed_is_recorded_incomplete_and_holds_nothing(gw, alice):
    marker = "unread_" + os.urandom(4).hex()
    # More times than the PostgreSQL backend's pool has connections: rows left waiting would keep one each.
    for _ in range(4):
        alice.parse(f"select order_id as {marker} from sales.orders where amount > $1")
        alice.bind(0)
        alice.describe_portal()
        alice.sync()
        assert shape(alice.until_ready()) == ["1", "2", ("T", [marker])]
    assert_the_session_goes_on(alice)
    unread = eventually("the records of the unread portals", lambda: len(records(gw, marker)) == 4 and records(gw, marker))
    assert all((e["outcome"] or {}).get("incomplete") for e in unread), unread


def test_a_row_limit_pages_through_a_described_portal(alice):
    first, second, _ = alice.simple(ORDERS_AFTER.replace("$1", "0"))
    alice.parse(ORDERS_AFTER)
    alice.bind(0)
    alice.describe_portal()
    alice.execute(max_rows=1)
    alice.execute(max_rows=1)
    alice.execute(max_rows=1)
    alice.sync()
    assert shape(alice.until_ready()) == [
        "1", "2", ("T", ["order_id", "customer"]), first, "s", second, "s", ("C", "SELECT 0"),
    ]


def test_each_portal_gets_its_own_rows_whatever_order_they_are_described_and_executed_in(alice):
    every = alice.simple(ORDERS_AFTER.replace("$1", "0"))
    later = alice.simple(ORDERS_AFTER.replace("$1", "1"))
    assert every != later
    alice.parse(ORDERS_AFTER, name="after")
    alice.bind(0, portal="all", statement="after")
    alice.bind(1, portal="later", statement="after")
    alice.describe_portal("all")
    alice.describe_portal("later")
    alice.execute("all")
    alice.execute("later")
    alice.execute("all")
    alice.sync()
    header = ("T", ["order_id", "customer"])
    # A portal run to its end answers no more rows, as in PostgreSQL.
    assert shape(alice.until_ready()) == ["1", "2", "2", header, header, *every, *later, ("C", "SELECT 0")]


def test_a_statement_failing_as_it_runs_skips_to_the_sync_and_the_session_goes_on(alice):
    alice.parse("select order_id / (order_id - order_id) from sales.orders where amount > $1")
    alice.bind(0)
    alice.describe_portal()
    alice.execute()
    alice.sync()
    answer = shape(alice.until_ready())
    # PostgreSQL fails before the first row; the embedded engine once it has described the columns.
    assert answer[:2] == ["1", "2"] and answer[-1][0] == "E", answer
    assert not [m for m in answer if m[0] in "DC"], answer
    assert_the_session_goes_on(alice)


def test_a_hidden_column_is_refused_at_the_parse_and_never_described(gw):
    carol = Wire(gw, "carol")
    try:
        carol.parse("select card_number from sales.orders where amount > $1")
        carol.bind(0)
        carol.describe_portal()
        carol.execute()
        carol.sync()
        assert shape(carol.until_ready()) == [("E", "42501")]
    finally:
        carol.close()


def test_a_flush_delivers_the_answers_so_far_without_ending_the_batch(alice):
    # Answers are buffered until Sync or Flush, as in PostgreSQL: a driver that flushes and waits must get them.
    rows = alice.simple(ORDERS_AFTER.replace("$1", "0"))
    alice.parse(ORDERS_AFTER)
    alice.bind(0)
    alice.describe_portal()
    alice.execute()
    alice.send(b"H", b"")
    answer = [alice.read() for _ in range(3 + len(rows))]
    assert shape(answer) == ["1", "2", ("T", ["order_id", "customer"]), *rows]
    alice.sync()
    assert alice.until_ready() == []


def test_a_statement_is_described_with_its_parameters_and_columns_and_then_runs_as_bound(alice):
    # What asyncpg and pgJDBC do first with a statement: Parse and Describe it, then Bind and Execute it later.
    alice.parse(ORDERS_AFTER, name="after")
    alice.describe_statement("after")
    alice.sync()
    answer = alice.until_ready()
    assert [m[0] for m in answer] == [b"1", b"t", b"T"], answer
    assert struct.unpack("!h", answer[1][1][:2]) == (1,)  # one parameter
    assert shape(answer[2:]) == [("T", ["order_id", "customer"])]
    alice.bind(1, statement="after")
    alice.execute()
    alice.sync()
    assert shape(alice.until_ready()) == ["2", *alice.simple(ORDERS_AFTER.replace("$1", "1"))]


# ---------------------------------------------------------------- bounds

LIMIT = 64 * 1024
# A statement must fit in a message: the longest is a little under it.
BOUNDED = {"LAKEGATE__SQL__MAX_MESSAGE_BYTES": str(LIMIT), "LAKEGATE__SQL__MAX_STATEMENT_BYTES": str(LIMIT - 1)}


def test_a_message_up_to_the_limit_is_answered_and_one_over_it_ends_the_session_at_its_header(start_lakegate):
    lg = start_lakegate(env=BOUNDED)
    wire = Wire(lg, "alice")
    # The length field counts itself and the text's terminating zero.
    sql = b"select 1 as one -- "
    wire.send(b"Q", sql + b"x" * (LIMIT - 4 - len(sql) - 1) + b"\0")
    assert shape(wire.until_ready()) == [("T", ["one"]), ("D", ("1",)), ("C", "SELECT 1")]
    # One byte more: the header and a little are sent, the rest never is, and the answer comes all the same.
    wire.sock.sendall(b"Q" + struct.pack("!i", LIMIT + 1) + b"select")
    code, message = wire.fatal()
    assert (code, f"{LIMIT + 1} bytes is over the limit of {LIMIT}" in message) == ("54000", True), message


def test_a_message_over_the_limit_sent_with_the_password_ends_the_session_once_authenticated(start_lakegate):
    # Here the header reaches the gateway in the same read as the password, before the session is bounded.
    lg = start_lakegate(env=BOUNDED)
    bind = b"B" + struct.pack("!i", 1 << 30) + b"\0\0"
    wire = Wire(lg, "alice", ahead=bind)
    assert wire.fatal()[0] == "54000"


def test_a_startup_message_over_10000_bytes_is_refused_with_08p01_before_anything_else(lakegate):
    # PostgreSQL reads a startup message of up to 10,000 bytes; the gateway says why it reads no further.
    sock = socket.create_connection(("127.0.0.1", lakegate.sql_port), timeout=30)
    params = b"user\0alice\0application_name\0" + b"a" * 10_000 + b"\0\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 3 << 16) + params)
    code, message = Wire.unauthenticated(sock).fatal()
    assert (code, "invalid message length" in message) == ("08P01", True), message


def test_a_message_limit_that_would_refuse_the_longest_statement_stops_the_start(tmp_path):
    env = dict(
        os.environ,
        LAKEGATE__SQL__MAX_STATEMENT_BYTES=str(LIMIT),
        LAKEGATE__SQL__MAX_MESSAGE_BYTES=str(LIMIT),
        **{f"LAKEGATE__{front}__LISTEN": f"127.0.0.1:{free_port()}" for front in ("CONTROL", "S3", "SQL")},
    )
    serve = [str(BINARY), "serve", "--data-dir", str(tmp_path)]
    failed = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "must be above sql.max_statement_bytes" in failed.stderr, failed.stderr


def psql_select_1(lg, user):
    """psql connecting as `user` with their token and running `select 1`: what it printed and its exit code."""
    env = dict(os.environ, PGPASSWORD=token(lg, user), PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={lg.sql_port} dbname=lakegate user={user} sslmode=disable"
    return subprocess.run(["psql", dsn, "-X", "-c", "select 1"], env=env, capture_output=True, text=True, timeout=60)


def let_in_once_a_place_is_free(lg, user):
    """A session of `user`'s, once the gateway lets them in (a closed session's place is freed as it ends)."""
    def let_in():
        try:
            return Wire(lg, user)
        except AssertionError:
            return None

    return eventually(f"a place for {user}", let_in)


def test_a_client_past_max_connections_is_refused_with_53300_and_let_in_once_a_session_ends(start_lakegate):
    lg = start_lakegate(env={"LAKEGATE__SQL__MAX_CONNECTIONS": "2"})
    alice, bob = Wire(lg, "alice"), Wire(lg, "bob")
    # psql shows PostgreSQL's own words for it.
    refused = psql_select_1(lg, "carol")
    assert refused.returncode != 0 and "sorry, too many clients already" in refused.stderr, refused.stderr
    with pytest.raises(AssertionError, match="53300"):
        Wire(lg, "carol")
    # The sessions in are not disturbed; once one ends, its place is free again.
    assert bob.simple("select 1 as one") == [("D", ("1",)), ("C", "SELECT 1")]
    alice.close()
    carol = let_in_once_a_place_is_free(lg, "carol")
    assert carol.simple("select 1 as one") == [("D", ("1",)), ("C", "SELECT 1")]
    carol.close()
    bob.close()


def test_a_user_past_their_share_of_sessions_is_refused_with_53300_and_others_are_let_in(start_lakegate):
    lg = start_lakegate(env={"LAKEGATE__SQL__MAX_CONNECTIONS_PER_USER": "2"})
    first, second = Wire(lg, "alice"), Wire(lg, "alice")
    # psql shows PostgreSQL's words for a role past its connection limit.
    refused = psql_select_1(lg, "alice")
    assert refused.returncode != 0 and 'too many connections for role "alice"' in refused.stderr, refused.stderr
    with pytest.raises(AssertionError, match="53300"):
        Wire(lg, "alice")
    # Someone else is let in, and alice's sessions go on; once one ends, alice is let in again.
    bob = Wire(lg, "bob")
    assert second.simple("select 1 as one") == [("D", ("1",)), ("C", "SELECT 1")]
    first.close()
    third = let_in_once_a_place_is_free(lg, "alice")
    assert third.simple("select 1 as one") == [("D", ("1",)), ("C", "SELECT 1")]
    for wire in (third, second, bob):
        wire.close()
