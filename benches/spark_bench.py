"""The Spark backend benchmark; run through benches/spark.sh."""

import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
LAKEGATE, ROWS, REPEAT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
AGGREGATE = "SELECT count(*), sum(amount) FROM sales.orders"
SCAN = "SELECT order_id, amount FROM sales.orders"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not start")


def write_orders(path):
    """ROWS orders in the demo table's shape, half EU: written in chunks so memory stays small."""
    schema = pa.schema([("order_id", pa.int64()), ("customer", pa.string()), ("region", pa.string()),
                        ("amount", pa.decimal128(12, 2)), ("card_number", pa.string())])
    chunk = 1_000_000
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, ROWS, chunk):
            ids = range(start + 1, min(start + chunk, ROWS) + 1)
            w.write_table(pa.table({
                "order_id": pa.array(ids, pa.int64()),
                "customer": pa.array([f"c{i % 1000}" for i in ids]),
                "region": pa.array(["EU" if i % 2 else "US" for i in ids]),
                "amount": pa.array([(i * 7919) % 90_000 / 100 for i in ids]).cast(pa.decimal128(12, 2)),
                "card_number": pa.array([str(4_000_000_000_000_000 + i) for i in ids]),
            }, schema=schema))


def lakegate(work, name, orders_backend, spark_env):
    """A Lakegate on the demo policies with sales.orders on `orders_backend` (spark or embedded)."""
    policies = work / f"{name}-policies"
    shutil.copytree(REPO / "policies", policies)
    catalog = policies / "catalog.toml"
    text = catalog.read_text()
    old = 'backend = "embedded"\nformat = "iceberg"\nlocation = "s3://lake/iceberg/sales/orders-d0000001/"'
    assert old in text
    data = work / f"{name}-data"
    if orders_backend == "spark":
        new = f'backend = "spark"\nformat = "parquet"\nlocation = "file://{work}/orders/"'
    else:
        (data / "warehouse" / "sales" / "orders").mkdir(parents=True)
        os.link(work / "orders" / "part-0.parquet", data / "warehouse" / "sales" / "orders" / "part-0.parquet")
        new = 'backend = "embedded"\nformat = "parquet"'
    catalog.write_text(text.replace(old, new))
    port = free_port()
    env = dict(os.environ, LAKEGATE_LOG="warn", LAKEGATE__POLICY__DIR=str(policies),
               LAKEGATE__SQL__LISTEN=f"127.0.0.1:{port}", LAKEGATE__CONTROL__LISTEN=f"127.0.0.1:{free_port()}",
               LAKEGATE__S3__LISTEN=f"127.0.0.1:{free_port()}", **spark_env)
    proc = subprocess.Popen([LAKEGATE, "serve", "--data-dir", str(data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"))
    wait_port(port, 60, f"Lakegate ({name})")
    token = subprocess.run([LAKEGATE, "token", "--data-dir", str(data), "--sub", "alice", "--groups", "analysts",
                            "--attr", "region=EU"], capture_output=True, text=True, check=True).stdout.strip()
    conn = psycopg.connect(host="127.0.0.1", port=port, user="alice", password=token, dbname="lakegate",
                           sslmode="disable", autocommit=True)
    return proc, conn, (port, token)


def timed(run):
    """Median seconds of REPEAT runs after one warm-up, and the warm-up's result."""
    result = run()
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def first_row(port, token):
    """Seconds from sending SCAN (simple query protocol, a raw socket) to its first DataRow."""
    import struct

    def message(kind, body):
        return kind + struct.pack("!I", len(body) + 4) + body

    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")

        def read():
            kind = f.read(1)
            (length,) = struct.unpack("!I", f.read(4))
            return kind, f.read(length - 4)

        params = b"user\0alice\0database\0lakegate\0\0"
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        while (m := read())[0] != b"Z":
            if m[0] == b"R" and m[1][:4] == struct.pack("!I", 3):
                s.sendall(message(b"p", token.encode() + b"\0"))
            elif m[0] == b"E":
                raise SystemExit(f"login failed: {m[1]!r}")
        t = time.perf_counter()
        s.sendall(message(b"Q", SCAN.encode() + b"\0"))
        while (m := read())[0] != b"D":
            if m[0] == b"E":
                raise SystemExit(f"scan failed: {m[1]!r}")
        return time.perf_counter() - t


def main():
    work = Path(tempfile.mkdtemp(prefix="lakegate-spark-bench."))
    procs = []
    try:
        (work / "orders").mkdir()
        write_orders(work / "orders" / "part-0.parquet")
        port, token = free_port(), secrets.token_hex(16)
        (work / "token").write_text(token)
        spark = subprocess.Popen([str(REPO / "tests/spark/connect-server"), str(port), str(work / "token"),
                                  str(work / "events")], stdout=open(work / "spark.log", "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(spark)
        wait_port(port, 240, "Spark Connect")
        spark_env = {"LAKEGATE__SQL__SPARK":
                     f'[{{name = "spark", remote = "sc://127.0.0.1:{port}", token_file = "{work}/token"}}]'}
        on_spark, spark_conn, spark_login = lakegate(work, "spark", "spark", spark_env)
        on_embedded, embedded_conn, embedded_login = lakegate(work, "embedded", "embedded", {})
        procs += [on_spark, on_embedded]

        os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = token
        from pyspark.sql import SparkSession
        direct = SparkSession.builder.remote(f"sc://localhost:{port}").create()
        by_hand = (f"SELECT count(*), sum(amount) FROM parquet.`file://{work}/orders/` WHERE region = 'EU'")

        t_lg, r_lg = timed(lambda: spark_conn.execute(AGGREGATE).fetchall())
        t_direct, r_direct = timed(lambda: direct.sql(by_hand).collect())
        t_emb, r_emb = timed(lambda: embedded_conn.execute(AGGREGATE).fetchall())
        # The comparison means nothing unless all three saw the same rows.
        assert [tuple(r_lg[0])] == [tuple(r_emb[0])] == [(r_direct[0][0], r_direct[0][1])], (r_lg, r_direct, r_emb)
        ttfr_spark = statistics.median(first_row(*spark_login) for _ in range(REPEAT))
        ttfr_emb = statistics.median(first_row(*embedded_login) for _ in range(REPEAT))
        direct.stop()

        print(f"| measurement ({ROWS:,} rows of Parquet, filter region = 'EU', median of {REPEAT}) | time | ratio |")
        print("|---|---|---|")
        print(f"| `{AGGREGATE}` through Lakegate on Spark (policy filter) | {t_lg * 1000:.0f} ms | "
              f"{t_lg / t_direct:.2f}x direct |")
        print(f"| the same aggregate submitted to Spark directly, filter by hand | {t_direct * 1000:.0f} ms | 1.00 |")
        print(f"| through Lakegate on the embedded engine (same file) | {t_emb * 1000:.0f} ms | "
              f"{t_emb / t_direct:.2f}x direct Spark |")
        print(f"| first row of `{SCAN}` through Lakegate on Spark | {ttfr_spark * 1000:.0f} ms | |")
        print(f"| first row of the same scan on the embedded engine | {ttfr_emb * 1000:.0f} ms | |")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL) if p is procs[0] else p.kill()
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


main()
