#!/usr/bin/env bash
# S3 front benchmark (not a test). One run, one machine, loopback only, every step bounded in time.
#
#   benches/s3.sh            # prints a Markdown report; paste it under "S3 front" in docs/benchmarks.md
#
# Compares, for the same backend (the s3s-fs binary, a fast Rust S3 server):
#   direct     client -> s3s-fs
#   nginx      client -> Debian's nginx as a plain reverse proxy -> s3s-fs
#   lakegate   client -> Lakegate (SigV4 check, Cedar decision, audit, re-sign) -> s3s-fs
# and, for serving bytes from local disk:
#   embedded   client -> Lakegate with its embedded store (s3s-fs in-process)
#   static     client -> nginx serving the same files as static files
# and, for a pod's sidecar:
#   sidecar    client -> `lakegate-sidecar` (dummy keys; STS credentials, re-sign) -> Lakegate embedded
#
# Measures GET and PUT of a 256 MiB object (MiB/s, curl), 4 KiB GETs (req/s, p50, p99; `hey` at a few
# concurrencies, each for BENCH_SECONDS) and Lakegate's peak RSS (VmHWM). Requests are presigned URLs, so the
# load tools need no signing and every request still carries a signature Lakegate (or s3s-fs) checks.
#
# Needs: Debian's nginx and hey (installed if missing), curl, a Python with boto3 (.venv from scripts/test, or
# python3), and builds what it needs: Lakegate in release mode, s3s-fs 0.14.1 (`cargo install`, into
# benches/.tools, not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_EACH=${BENCH_SECONDS:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
BIG_MIB=${BENCH_BIG_MIB:-256}
WORK=$(mktemp -d /tmp/lakegate-bench.XXXXXX)
chmod 755 "$WORK"  # nginx workers (www-data) read the static files
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need nginx nginx
need hey hey
need curl curl

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# LAKEGATE_BIN: a release binary already built (skips the build); the sidecar binary is taken from beside it.
if [ -n "${LAKEGATE_BIN:-}" ]; then
  LAKEGATE=$LAKEGATE_BIN
else
  echo "building (release) ..." >&2
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo build --release --quiet --workspace
  LAKEGATE=${CARGO_TARGET_DIR:-target}/release/lakegate
fi
SIDECAR=$(dirname "$LAKEGATE")/lakegate-sidecar
S3SFS=$ROOT/benches/.tools/bin/s3s-fs
if [ ! -x "$S3SFS" ]; then
  cargo install --quiet s3s-fs --version 0.14.1 --features binary --root "$ROOT/benches/.tools"
fi

AK=benchstore SK=benchstore-secret-key-0123456789
mkdir -p "$WORK/s3s" "$WORK/static/lake/sales/bench" "$WORK/lg-remote" "$WORK/lg-embedded"
P_S3S=$(free_port); P_NGINX=$(free_port); P_STATIC=$(free_port); P_LG=$(free_port); P_LGE=$(free_port)
P_SC=$(free_port)

"$S3SFS" --host 127.0.0.1 --port "$P_S3S" --access-key "$AK" --secret-key "$SK" "$WORK/s3s" >"$WORK/s3s.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  sendfile on;
  upstream s3s { server 127.0.0.1:$P_S3S; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGINX;
    client_max_body_size 0;
    location / {
      proxy_pass http://s3s;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
  server {
    listen 127.0.0.1:$P_STATIC;
    root $WORK/static;
  }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK"

run_lakegate() { # dir port config -> sets LAST_PID
  local dir=$1 port=$2
  printf '%s\n' "$3" >"$dir/lakegate.toml"
  LAKEGATE__CONTROL__LISTEN=127.0.0.1:$(free_port) LAKEGATE__SQL__LISTEN=127.0.0.1:$(free_port) \
  LAKEGATE__S3__LISTEN=127.0.0.1:$port LAKEGATE_LOG=warn \
    "$LAKEGATE" serve --config "$dir/lakegate.toml" --data-dir "$dir" >"$dir/serve.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
run_lakegate "$WORK/lg-remote" "$P_LG" "[s3.backend]
kind = \"remote\"
endpoint = \"http://127.0.0.1:$P_S3S\"
access_key_id = \"$AK\"
secret_access_key = \"$SK\""
LG_PID=$LAST_PID
run_lakegate "$WORK/lg-embedded" "$P_LGE" ""
LGE_PID=$LAST_PID
for p in "$P_S3S" "$P_NGINX" "$P_STATIC" "$P_LG" "$P_LGE"; do wait_port "$p"; done
# The sidecar holds a token of the embedded instance's dev issuer, as a pod holds its projected token.
"$LAKEGATE" token --data-dir "$WORK/lg-embedded" --sub alice --groups analysts --ttl 2h >"$WORK/alice.jwt"
LAKEGATE_LOG=warn "$SIDECAR" --token-file "$WORK/alice.jwt" --upstream "http://127.0.0.1:$P_LGE" \
  --listen "127.0.0.1:$P_SC" >"$WORK/sidecar.log" 2>&1 &
SC_PID=$!
PIDS+=("$SC_PID")
wait_port "$P_SC"

head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$WORK/big.bin"
head -c 4096 /dev/urandom >"$WORK/small.bin"
cp "$WORK/small.bin" "$WORK/static/lake/sales/bench/small.bin"
cp "$WORK/big.bin" "$WORK/static/lake/sales/bench/big.bin"

# Presigned URLs for each target: store credentials for direct and nginx, Lakegate credentials otherwise.
"$LAKEGATE" credentials --data-dir "$WORK/lg-remote" --sub alice --groups analysts --ttl 2h >"$WORK/creds-remote.json"
"$LAKEGATE" credentials --data-dir "$WORK/lg-embedded" --sub alice --groups analysts --ttl 2h >"$WORK/creds-embedded.json"
"$PY" - "$WORK" "$AK" "$SK" "$P_S3S" "$P_NGINX" "$P_LG" "$P_LGE" "$P_SC" <<'EOF'
import json, sys, boto3
from botocore.config import Config
work, ak, sk, p_s3s, p_nginx, p_lg, p_lge, p_sc = sys.argv[1:]
def client(port, creds):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}), **creds)
store = dict(aws_access_key_id=ak, aws_secret_access_key=sk)
def vended(name):
    c = json.load(open(f"{work}/{name}"))
    return dict(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
targets = {"direct": client(p_s3s, store), "nginx": client(p_nginx, store),
           "lakegate": client(p_lg, vended("creds-remote.json")), "embedded": client(p_lge, vended("creds-embedded.json")),
           "sidecar": client(p_sc, dict(aws_access_key_id="x", aws_secret_access_key="x"))}
targets["direct"].create_bucket(Bucket="lake")
targets["direct"].put_object(Bucket="lake", Key="sales/bench/small.bin", Body=open(f"{work}/small.bin", "rb").read())
targets["embedded"].put_object(Bucket="lake", Key="sales/bench/small.bin", Body=open(f"{work}/small.bin", "rb").read())
urls = {}
for name, c in targets.items():
    presign = lambda method, key: c.generate_presigned_url(method, Params={"Bucket": "lake", "Key": f"sales/bench/{key}"}, ExpiresIn=7200)
    urls[f"{name}:small"] = presign("get_object", "small.bin")
    # The big object is the one the PUT stores.
    urls[f"{name}:put"] = presign("put_object", "big.bin")
    urls[f"{name}:get"] = presign("get_object", "big.bin")
json.dump(urls, open(f"{work}/urls.json", "w"))
EOF
url() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/urls.json" "$1"; }

put_big() { # url -> MiB/s
  curl -sS -f --max-time 300 -T "$WORK/big.bin" -o /dev/null -w '%{speed_upload}' "$1" | awk '{printf "%.0f", $1/1048576}'
}
get_big() { # url -> MiB/s
  curl -sS -f --max-time 300 -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.0f", $1/1048576}'
}
hey_run() { # url concurrency -> "rps p50ms p99ms"
  hey -z "${SECONDS_EACH}s" -c "$2" -disable-compression "$1" >"$WORK/hey.txt" 2>&1 || true
  local codes; codes=$(grep -E '^\s+\[[0-9]+\]' "$WORK/hey.txt" | tr -s ' ' | tr '\n' ' ')
  if ! grep -qE '^\s+\[200\]' "$WORK/hey.txt" || grep -qE '^\s+\[[^2][0-9]+\]' "$WORK/hey.txt"; then
    echo "non-200 answers: $codes" >&2
  fi
  awk '/Requests\/sec/ {rps=$2} / 50% in/ {p50=$3*1000} / 99% in/ {p99=$3*1000} END {printf "%.0f %.2f %.2f", rps, p50, p99}' "$WORK/hey.txt"
}

echo "measuring ..." >&2
declare -A PUT GET
for t in direct nginx lakegate embedded sidecar; do
  PUT[$t]=$(put_big "$(url "$t:put")")
  GET[$t]=$(get_big "$(url "$t:get")")
done
GET[static]=$(get_big "http://127.0.0.1:$P_STATIC/lake/sales/bench/big.bin")

declare -A SMALL
for c in $CONCURRENCY; do
  for t in direct nginx lakegate embedded sidecar; do SMALL[$t:$c]=$(hey_run "$(url "$t:small")" "$c"); done
  SMALL[static:$c]=$(hey_run "http://127.0.0.1:$P_STATIC/lake/sales/bench/small.bin" "$c")
done
RSS_LG=$(awk '/VmHWM/ {print int($2/1024)}' /proc/"$LG_PID"/status)
RSS_LGE=$(awk '/VmHWM/ {print int($2/1024)}' /proc/"$LGE_PID"/status)
RSS_SC=$(awk '/VmHWM/ {print int($2/1024)}' /proc/"$SC_PID"/status)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rps() { echo "$1" | cut -d' ' -f1; }
p50() { echo "$1" | cut -d' ' -f2; }
p99() { echo "$1" | cut -d' ' -f3; }
small_row() { # label "rps p50 p99" of a, of b -> a table row with a / b
  echo "| $1 | $(rps "$2") ($(p50 "$2")/$(p99 "$2")) | $(rps "$3") ($(p50 "$3")/$(p99 "$3")) | $(ratio "$(rps "$2")" "$(rps "$3")") |"
}

cat <<EOF
Command: \`benches/s3.sh\` (BENCH_SECONDS=$SECONDS_EACH, concurrencies: $CONCURRENCY, big object: $BIG_MIB MiB)
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); loopback; $(date -u +%Y-%m-%d)

### Through a proxy to the same backend (s3s-fs 0.14.1)

| 256 MiB object | direct | nginx | lakegate | lakegate / direct | lakegate / nginx |
|---|---|---|---|---|---|
| PUT MiB/s | ${PUT[direct]} | ${PUT[nginx]} | ${PUT[lakegate]} | $(ratio "${PUT[lakegate]}" "${PUT[direct]}") | $(ratio "${PUT[lakegate]}" "${PUT[nginx]}") |
| GET MiB/s | ${GET[direct]} | ${GET[nginx]} | ${GET[lakegate]} | $(ratio "${GET[lakegate]}" "${GET[direct]}") | $(ratio "${GET[lakegate]}" "${GET[nginx]}") |

| 4 KiB GET, concurrency | direct req/s (p50/p99 ms) | nginx req/s (p50/p99 ms) | lakegate req/s (p50/p99 ms) | lakegate / direct req/s | lakegate / nginx req/s |
|---|---|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  d=${SMALL[direct:$c]} n=${SMALL[nginx:$c]} l=${SMALL[lakegate:$c]}
  echo "| $c | $(rps "$d") ($(p50 "$d")/$(p99 "$d")) | $(rps "$n") ($(p50 "$n")/$(p99 "$n")) | $(rps "$l") ($(p50 "$l")/$(p99 "$l")) | $(ratio "$(rps "$l")" "$(rps "$d")") | $(ratio "$(rps "$l")" "$(rps "$n")") |"
done
cat <<EOF

### Serving local bytes: Lakegate's embedded store vs nginx static files

| | embedded | nginx static | embedded / static |
|---|---|---|---|
| GET 256 MiB, MiB/s | ${GET[embedded]} | ${GET[static]} | $(ratio "${GET[embedded]}" "${GET[static]}") |
EOF
for c in $CONCURRENCY; do small_row "4 KiB GET c=$c, req/s (p50/p99 ms)" "${SMALL[embedded:$c]}" "${SMALL[static:$c]}"; done
cat <<EOF
| PUT 256 MiB, MiB/s | ${PUT[embedded]} | (static files take no PUT) | |

Lakegate peak RSS (VmHWM): ${RSS_LG} MiB in front of s3s-fs, ${RSS_LGE} MiB with the embedded store.
EOF
cat <<EOF

### A pod's sidecar: client -> sidecar -> Lakegate (embedded store) vs client -> Lakegate directly

| | via sidecar | direct to Lakegate | sidecar / direct |
|---|---|---|---|
| PUT 256 MiB, MiB/s | ${PUT[sidecar]} | ${PUT[embedded]} | $(ratio "${PUT[sidecar]}" "${PUT[embedded]}") |
| GET 256 MiB, MiB/s | ${GET[sidecar]} | ${GET[embedded]} | $(ratio "${GET[sidecar]}" "${GET[embedded]}") |
EOF
for c in $CONCURRENCY; do small_row "4 KiB GET c=$c, req/s (p50/p99 ms)" "${SMALL[sidecar:$c]}" "${SMALL[embedded:$c]}"; done
echo
echo "Sidecar peak RSS (VmHWM): ${RSS_SC} MiB."
