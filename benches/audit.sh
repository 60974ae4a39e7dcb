#!/usr/bin/env bash
# Audit durability benchmark (not a test): what `[audit] durability = "sync"` costs against "batch".
#
#   benches/audit.sh         # prints a Markdown report; paste it under "Audit durability" in docs/benchmarks.md
#
# benches/s3.sh's 4 KiB GET case against Lakegate's embedded store, run twice on the same machine and files:
# once with LAKEGATE__AUDIT__DURABILITY=batch, once with =sync. Every GET is a SigV4 check, a Cedar decision and an
# audit record; with sync the request also waits until its decision record is written and fsynced (shared by all
# requests queued at that moment). `hey` at each concurrency for BENCH_SECONDS, the two modes alternating for
# BENCH_ROUNDS rounds (default 3; the report gives each cell's median, so a burst of load from elsewhere on the
# machine hits both modes alike). The audit directories are on the file system of BENCH_DIR (default /var/tmp),
# which the report names: fsync cost is the file system's.
#
# Needs: hey (installed from Debian if missing), a Python with boto3 (.venv from scripts/test, or python3), and a
# lakegate binary: LAKEGATE_BIN, or a release build made here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps  # protoc, for any build below (cargo build or bench) on a fresh machine
SECONDS_EACH=${BENCH_SECONDS:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
ROUNDS=${BENCH_ROUNDS:-3}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lakegate-audit-bench.XXXXXX")
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v hey >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends hey >/dev/null; }

if [ -n "${LAKEGATE_BIN:-}" ]; then
  LAKEGATE=$LAKEGATE_BIN
else
  echo "building (release) ..." >&2
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo build --release --quiet -p lakegate
  LAKEGATE=${CARGO_TARGET_DIR:-target}/release/lakegate
fi

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

head -c 4096 /dev/urandom >"$WORK/small.bin"

# One Lakegate per mode, each on its own data directory; the 4 KiB object put and presigned through it.
start() { # mode -> sets LG_PID; writes $WORK/$mode/url
  local mode=$1 dir=$WORK/$1
  mkdir -p "$dir"
  PORT=$(free_port)
  LAKEGATE__CONTROL__LISTEN=127.0.0.1:$(free_port) LAKEGATE__SQL__LISTEN=127.0.0.1:$(free_port) \
  LAKEGATE__S3__LISTEN=127.0.0.1:$PORT LAKEGATE__AUDIT__DURABILITY=$mode LAKEGATE_LOG=warn \
    "$LAKEGATE" serve --data-dir "$dir" >"$dir/serve.log" 2>&1 &
  LG_PID=$!
  PIDS+=("$LG_PID")
  wait_port "$PORT"
  "$LAKEGATE" credentials --data-dir "$dir" --sub alice --groups analysts --ttl 2h >"$dir/creds.json"
  "$PY" - "$dir" "$PORT" "$WORK/small.bin" <<'EOF'
import json, sys, boto3
from botocore.config import Config
d, port, small = sys.argv[1:]
c = json.load(open(f"{d}/creds.json"))
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
                  aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                  aws_session_token=c["SessionToken"])
s3.put_object(Bucket="lake", Key="sales/bench/small.bin", Body=open(small, "rb").read())
url = s3.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "sales/bench/small.bin"}, ExpiresIn=7200)
open(f"{d}/url", "w").write(url)
EOF
}

hey_run() { # url concurrency -> "rps p50ms p99ms"
  hey -z "${SECONDS_EACH}s" -c "$2" -disable-compression "$1" >"$WORK/hey.txt" 2>&1 || true
  if ! grep -qE '^\s+\[200\]' "$WORK/hey.txt" || grep -qE '^\s+\[[^2][0-9]+\]' "$WORK/hey.txt"; then
    echo "non-200 answers: $(grep -E '^\s+\[[0-9]+\]' "$WORK/hey.txt" | tr -s ' ' | tr '\n' ' ')" >&2
  fi
  awk '/Requests\/sec/ {rps=$2} / 50% in/ {p50=$3*1000} / 99% in/ {p99=$3*1000} END {printf "%.0f %.2f %.2f", rps, p50, p99}' "$WORK/hey.txt"
}

records() { # dir -> audit lines written
  cat "$1"/audit/audit-*.jsonl | wc -l
}

declare -A PID RUNS
for mode in batch sync; do
  start "$mode"
  PID[$mode]=$LG_PID
done
before_batch=$(records "$WORK/batch"); before_sync=$(records "$WORK/sync")
for round in $(seq 1 "$ROUNDS"); do
  for mode in batch sync; do
    echo "round $round: $mode ..." >&2
    for c in $CONCURRENCY; do
      RUNS[$mode:$c]="${RUNS[$mode:$c]:-}$(hey_run "$(cat "$WORK/$mode/url")" "$c")"$'\n'
    done
  done
done
for mode in batch sync; do kill -TERM "${PID[$mode]}"; wait "${PID[$mode]}" || true; done
LINES_BATCH=$(( $(records "$WORK/batch") - before_batch )); LINES_SYNC=$(( $(records "$WORK/sync") - before_sync ))

median() { # lines of "rps p50 p99" -> "rps p50 p99", each the median of its column
  local col out=""
  for col in 1 2 3; do
    out="$out $(printf '%s' "$1" | awk 'NF' | cut -d' ' -f"$col" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  done
  echo $out
}
declare -A R
for key in "${!RUNS[@]}"; do R[$key]=$(median "${RUNS[$key]}"); done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
f() { echo "$1" | cut -d' ' -f"$2"; }

cat <<EOF
Command: \`benches/audit.sh\` (BENCH_SECONDS=$SECONDS_EACH, BENCH_ROUNDS=$ROUNDS, concurrencies: $CONCURRENCY, binary: $LAKEGATE)
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); audit files on $(df -T "$WORK" | awk 'NR==2 {print $2 " (" $1 ")"}'); $(date -u +%Y-%m-%d)

| 4 KiB GET, concurrency | batch req/s (p50/p99 ms) | sync req/s (p50/p99 ms) | sync / batch req/s |
|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  b=${R[batch:$c]} s=${R[sync:$c]}
  echo "| $c | $(f "$b" 1) ($(f "$b" 2)/$(f "$b" 3)) | $(f "$s" 1) ($(f "$s" 2)/$(f "$s" 3)) | $(ratio "$(f "$s" 1)" "$(f "$b" 1)") |"
done
echo
echo "Medians of $ROUNDS rounds. Audit lines written during the runs: batch $LINES_BATCH, sync $LINES_SYNC (sync writes a decision and an outcome record per GET)."
