"""Fixtures for the real-client tests: a `lakegate serve` process on free ports, dev tokens, a real PostgreSQL.

The binary is the debug build that `scripts/test` makes before running pytest.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BINARY = TARGET / "debug" / "lakegate"
# The slim sidecar binary (crates/sidecar), built beside it by `cargo test --workspace`.
SIDECAR_BINARY = TARGET / "debug" / "lakegate-sidecar"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# How often a server is started on new free ports before a test gives up on it.
START_ATTEMPTS = 5


def wait_until_running(process, log, timeout=60.0):
    """Waits until one of Lakegate's servers writes "... is running" to `log`, which it does once every listener
    is bound; False when it exits first. (Waiting for its port to answer cannot tell it from another server that
    was handed the same free port.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b" is running" in log.read_bytes():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    process.kill()
    raise TimeoutError(f"{process.args[0]} was not running after {timeout}s")


def eventually(what, check, timeout=20.0):
    """Polls `check` until it returns a truthy value (for effects that land asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Lakegate:
    """A running `lakegate serve` with its own data directory."""

    def __init__(self, env=None, config=None):
        self.data_dir = pathlib.Path(tempfile.mkdtemp(prefix="lakegate-test-"))
        args = [str(BINARY), "serve", "--data-dir", str(self.data_dir)]
        if config is not None:
            path = self.data_dir / "config.toml"
            path.write_text(config)
            args += ["--config", str(path)]
        self.log = open(self.data_dir / "serve.log", "wb")
        # A free port can be taken before the server binds it (as the local port of any connection, say): the
        # server then exits, and it is started again on new ports.
        for _ in range(START_ATTEMPTS):
            self.control_port, self.s3_port, self.sql_port = free_port(), free_port(), free_port()
            environ = dict(os.environ)
            environ.update({
                "LAKEGATE__CONTROL__LISTEN": f"127.0.0.1:{self.control_port}",
                "LAKEGATE__S3__LISTEN": f"127.0.0.1:{self.s3_port}",
                "LAKEGATE__SQL__LISTEN": f"127.0.0.1:{self.sql_port}",
                "LAKEGATE__POLICY__RELOAD_INTERVAL_SECONDS": "1",
                "LAKEGATE_LOG": "warn",
            })
            # A value of None removes the variable: some programs read an empty variable as set.
            for name, value in (env or {}).items():
                if value is None:
                    environ.pop(name, None)
                else:
                    environ[name] = value
            self.process = subprocess.Popen(args, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
            if wait_until_running(self.process, self.data_dir / "serve.log"):
                return
        self.stop()
        raise RuntimeError(f"lakegate serve exited before it was running, {START_ATTEMPTS} times")

    @property
    def control_url(self):
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def s3_url(self):
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def policy_dir(self):
        return self.data_dir / "policies"

    def token(self, sub, groups=(), attrs=None, ttl="1h"):
        args = [str(BINARY), "token", "--data-dir", str(self.data_dir), "--sub", sub, "--ttl", ttl]
        if groups:
            args += ["--groups", ",".join(groups)]
        for key, value in (attrs or {}).items():
            args += ["--attr", f"{key}={value}"]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def audit_events(self):
        events = []
        for path in sorted((self.data_dir / "audit").glob("audit-*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    events.append(json.loads(line)["event"])
                except (ValueError, KeyError):
                    pass
        return events

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


DEMO_USERS = {
    "alice": (["analysts"], {"region": "EU"}),
    "bob": (["analysts"], {"region": "US"}),
    "carol": (["hr"], {}),
    "dave": ([], {}),
}


@pytest.fixture(scope="session")
def lakegate():
    """One server on the demo world, shared by tests that do not change its policies."""
    lg = Lakegate()
    yield lg
    lg.stop()


@pytest.fixture
def start_lakegate():
    """A factory for servers a test may change (policies, config); all are stopped afterwards."""
    started = []

    def start(**kwargs):
        lg = Lakegate(**kwargs)
        started.append(lg)
        return lg

    yield start
    for lg in started:
        lg.stop()


def demo_token(lg, user):
    groups, attrs = DEMO_USERS[user]
    return lg.token(user, groups, attrs)


class Postgres:
    """A real PostgreSQL from Debian's binaries: initdb in a temp dir, on a free port (as `postgres` when root)."""

    def __init__(self):
        versions = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"))
        if not versions:
            raise RuntimeError("no PostgreSQL server binaries: run scripts/install-test-deps")
        self.bin = versions[-1]
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="lakegate-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.dir)], check=True)
        data = self.dir / "data"
        self._run([self.bin / "initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D", data])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([self.bin / "pg_ctl", "-w", "-t", "60", "-D", data, "-o", opts, "-l", self.dir / "log", "start"])

    def _run(self, args):
        args = [str(a) for a in args]
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        subprocess.run(args, check=True, capture_output=True)

    @property
    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def psql(self, sql):
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-U", "postgres", "-p", str(self.port), "-d", "postgres", "-c", sql],
            check=True, capture_output=True, text=True)
        return out.stdout

    def stop(self):
        try:
            self._run([self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.stop()
