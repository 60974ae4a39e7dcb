#!/usr/bin/env bash
# Spark backend benchmark (not a test), loopback only: a row-filtered aggregate over a Parquet table of ROWS rows
# (default 10 million), in one run:
#   1. through Lakegate on Spark (the demo policy's row filter `region = 'EU'`, as alice);
#   2. the same query submitted to the same Spark Connect server directly, the filter written by hand;
#   3. through Lakegate on its embedded engine (DataFusion) over the same file;
# and the time to the first row of a filtered scan through Lakegate on Spark and on the embedded engine.
# Prints a Markdown table. Usage: benches/spark.sh   (ROWS=..., REPEAT=5; LAKEGATE_BIN=path to use an existing
# binary instead of building a release one). Needs the test venv (scripts/install-test-deps); installs the Spark
# Connect Python client's gRPC packages into it for the direct submission.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps  # protoc, for any build below (cargo build or bench) on a fresh machine
ROWS=${ROWS:-10000000}
REPEAT=${REPEAT:-5}
if [ -z "${LAKEGATE_BIN:-}" ]; then
  cargo build --release --quiet --bin lakegate
  LAKEGATE_BIN="${CARGO_TARGET_DIR:-target}/release/lakegate"
fi
.venv/bin/python -c 'import grpc, grpc_status, zstandard' 2>/dev/null ||
  .venv/bin/pip install -q --disable-pip-version-check grpcio grpcio-status googleapis-common-protos zstandard
exec .venv/bin/python benches/spark_bench.py "$LAKEGATE_BIN" "$ROWS" "$REPEAT"
