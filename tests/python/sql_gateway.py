"""Starts `lakegate serve` on free loopback ports with a temporary data directory, for the SQL client tests."""

import glob
import json
import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lakegate_binary():
    if os.environ.get("LAKEGATE_BIN"):
        return os.environ["LAKEGATE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "lakegate")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.bin = lakegate_binary()
        self.sql_port, self.control_port, s3_port = free_port(), free_port(), free_port()
        env = dict(
            os.environ,
            LAKEGATE__SQL__LISTEN=f"127.0.0.1:{self.sql_port}",
            LAKEGATE__CONTROL__LISTEN=f"127.0.0.1:{self.control_port}",
            LAKEGATE__S3__LISTEN=f"127.0.0.1:{s3_port}",
            LAKEGATE_LOG="warn",
        )
        self.log = open(self.data_dir / "lakegate.log", "w")
        self.proc = subprocess.Popen([self.bin, "serve", "--data-dir", str(self.data_dir)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lakegate exited: {(self.data_dir / 'lakegate.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.sql_port), timeout=1):
                    with socket.create_connection(("127.0.0.1", self.control_port), timeout=1):
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("lakegate did not start listening within 60 s")

    def token(self, sub, groups="", attrs=None):
        cmd = [self.bin, "token", "--data-dir", str(self.data_dir), "--sub", sub]
        if groups:
            cmd += ["--groups", groups]
        for k, v in (attrs or {}).items():
            cmd += ["--attr", f"{k}={v}"]
        return subprocess.check_output(cmd, timeout=30).decode().strip()

    def audit_events(self):
        events = []
        for path in sorted(glob.glob(str(self.data_dir / "audit" / "*.jsonl"))):
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        events.append(json.loads(line)["event"])
        return events

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
