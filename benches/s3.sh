#!/usr/bin/env bash
# S3 front benchmark (not a test). One run, one machine, loopback only, every step bounded in time.
#
#   benches/s3.sh            # prints a Markdown report; `benches/run` writes it into docs/benchmarks.md
#
# Everything is a ratio against a reference measured in the same run:
#
#   Remote store (one nginx serving the bucket directory as static files, and taking PUTs as WebDAV):
#     direct       client -> nginx static store
#     nginx proxy  client -> a second nginx, a plain reverse proxy with worker processes of its own -> nginx
#                  static store
#     lakegate     client -> Lakegate, `[s3.backend] kind = "remote"` (SigV4 check, Cedar decision, audit,
#                  re-signed request; nginx ignores the signature) -> nginx static store
#   Embedded store (Lakegate's own store on local disk) vs the same bytes as nginx static files, 4 KiB GETs
#   with three kinds of authentication: `Authorization: Bearer <jwt>`, a SigV4 presigned URL, and SigV4 header
#   signing (one GET signed with botocore for the session credentials, the same headers replayed by the load
#   tool: they stay valid within the 15-minute clock-skew window; they are signed again before each run).
#   Large objects: GET from the embedded store vs nginx static; PUT into it vs `dd` of the same bytes to the
#   same file system (with conv=fdatasync, and without: the embedded store does not fsync an object).
#   Scale: BENCH_SCALE_CLIENTS concurrent GETs of one BENCH_SCALE_MIB object from the embedded store (curl
#   processes, bodies discarded): total throughput and Lakegate's RSS before, during and after.
#   A pod's sidecar: client -> `lakegate-sidecar` (dummy keys) -> Lakegate embedded vs client -> Lakegate.
#
# Small GETs: `wrk --latency` for BENCH_SECONDS at each of BENCH_CONCURRENCY connections (req/s, p50, p99).
# Large objects: `curl`, median of BENCH_BIG_ROUNDS PUTs and BENCH_BIG_ROUNDS x BENCH_BIG_GETS GETs of each
# target, GET bodies discarded (each object is downloaded once more afterwards and compared byte for byte). Every
# target is checked to answer 200 with the object's bytes before it is measured; a load run with any answer >=
# 400, any socket error or timeout, or less than the object's size per answer, a transfer that is not 200
# (201/204 for the WebDAV store) of the full size, or a scale client that ends in anything but 200, makes the
# run fail: the report is still printed, with the failures listed, and the script exits 1.
#
# Settings (environment): BENCH_SECONDS (5), BENCH_CONCURRENCY ("1 16 32 64 256"), BENCH_BIG_MIB (256),
# BENCH_BIG_ROUNDS (5), BENCH_BIG_GETS (3: GETs of each target per round, alternated), BENCH_SCALE_CLIENTS (500;
# 0 skips), BENCH_SCALE_MIB (256), BENCH_SCALE_TIMEOUT (1200 s, each scale client's limit: 500 x 256 MiB at
# 200 MiB/s take 11 minutes; a client cut off counts its bytes),
# BENCH_DIR (/var/tmp: the file system the stores and the dd reference write to), LAKEGATE_BIN (a release
# binary; skips the build; lakegate-sidecar is taken from beside it, and its section skipped if absent),
# CARGO_TARGET_DIR, PYTHON. At the defaults a run takes about 5 minutes plus the scale step.
#
# Needs: Debian's nginx and wrk (installed if missing), curl, a Python with boto3 (.venv from scripts/test, or
# python3).
#
# BENCH_PROFILE=DIR also profiles Lakegate during the bearer GETs at 16 connections (perf; see
# benches/flamegraph.sh): DIR/s3-get-4k-bearer-16.svg and .txt. The profiler costs that row some throughput.
# BENCH_PROFILE_CELL=TARGET:CONNECTIONS profiles another cell instead (header:16 for the SigV4 header GETs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps  # protoc, for any build below (cargo build or bench) on a fresh machine
. benches/flamegraph.sh
. benches/cpu.sh
SECONDS_EACH=${BENCH_SECONDS:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 32 64 256"}
BIG_MIB=${BENCH_BIG_MIB:-256}
BIG_ROUNDS=${BENCH_BIG_ROUNDS:-5}
BIG_GETS=${BENCH_BIG_GETS:-3}
SCALE_CLIENTS=${BENCH_SCALE_CLIENTS:-500}
SCALE_MIB=${BENCH_SCALE_MIB:-256}
SCALE_TIMEOUT=${BENCH_SCALE_TIMEOUT:-1200}
SMALL_BYTES=4096
PROFILE_CELL=${BENCH_PROFILE_CELL:-bearer:16}
NPROC=$(nproc)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMAND="$(env | grep -E '^(BENCH_[A-Z_]+|LAKEGATE_BIN)=' | grep -vE '^BENCH_(ONLY|DOC|LOG_DIR|CARGO_TIMEOUT)=' | sort | tr '\n' ' ')benches/s3.sh"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lakegate-s3-bench.XXXXXX")
chmod 755 "$WORK"  # nginx workers (nobody or www-data) read the static files
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$WORK/nginx.pid" "$WORK/nginx-proxy.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need nginx nginx
need wrk wrk
need curl curl

# A failure is reported at once and again at the end; the run then exits 1.
fail() { echo "FAILED: $*" >&2; echo "$*" >>"$WORK/failures"; }
fatal() { echo "FATAL: $*" >&2; exit 1; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; fatal "port $1 never opened"; }

if [ -n "${LAKEGATE_BIN:-}" ]; then
  LAKEGATE=$LAKEGATE_BIN
else
  echo "building (release) ..." >&2
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo build --release --quiet --workspace
  LAKEGATE=${CARGO_TARGET_DIR:-target}/release/lakegate
fi
SIDECAR=$(dirname "$LAKEGATE")/lakegate-sidecar
[ -x "$SIDECAR" ] || { echo "no $SIDECAR: the sidecar section is skipped" >&2; SIDECAR=""; }

mkdir -p "$WORK/static/lake/sales/bench" "$WORK/lg-remote" "$WORK/lg-embedded"
chmod 777 "$WORK/static/lake/sales/bench"  # the WebDAV PUTs are written by nginx's workers
P_STORE=$(free_port); P_PROXY=$(free_port); P_LG=$(free_port); P_LGE=$(free_port); P_SC=$(free_port)

# The store: one nginx serving static files and taking WebDAV PUTs.
cat >"$WORK/nginx.conf" <<EOF
worker_processes $NPROC;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  sendfile on;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$P_STORE;
    root $WORK/static;
    client_max_body_size 0;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
# The reference hop: a plain reverse proxy in front of it, buffering nothing, in an nginx of its own. In the
# store's nginx a worker could serve both ends of a proxied request itself, with no switch between processes:
# a hop deployed in front of a store never gets that, and Lakegate's hop (another process) does not either.
cat >"$WORK/nginx-proxy.conf" <<EOF
worker_processes $NPROC;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-proxy-body;
  proxy_temp_path $WORK/nginx-proxy-temp;
  keepalive_requests 10000000;
  upstream store { server 127.0.0.1:$P_STORE; keepalive 512; }
  server {
    listen 127.0.0.1:$P_PROXY;
    client_max_body_size 0;
    location / {
      proxy_pass http://store;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
EOF
nginx -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -p "$WORK"
nginx -e "$WORK/nginx-proxy-error.log" -c "$WORK/nginx-proxy.conf" -p "$WORK"

run_lakegate() { # dir port config -> sets LAST_PID and LAST_CONTROL (the control listener's port)
  local dir=$1 port=$2
  printf '%s\n' "$3" >"$dir/lakegate.toml"
  LAST_CONTROL=$(free_port)
  LAKEGATE__CONTROL__LISTEN=127.0.0.1:$LAST_CONTROL LAKEGATE__SQL__LISTEN=127.0.0.1:$(free_port) \
  LAKEGATE__S3__LISTEN=127.0.0.1:$port LAKEGATE_LOG=warn \
    "$LAKEGATE" serve --config "$dir/lakegate.toml" --data-dir "$dir" >"$dir/serve.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
# The store ignores the signature Lakegate adds; the keys only have to be there.
run_lakegate "$WORK/lg-remote" "$P_LG" "[s3.backend]
kind = \"remote\"
endpoint = \"http://127.0.0.1:$P_STORE\"
access_key_id = \"ignored-by-nginx\"
secret_access_key = \"ignored-by-nginx\""
LG_PID=$LAST_PID LG_CONTROL=$LAST_CONTROL
run_lakegate "$WORK/lg-embedded" "$P_LGE" ""
LGE_PID=$LAST_PID LGE_CONTROL=$LAST_CONTROL
for p in "$P_STORE" "$P_PROXY" "$P_LG" "$P_LGE"; do wait_port "$p"; done
# The sidecar holds a token of the embedded instance's dev issuer, as a pod holds its projected token; the
# bearer-token GETs use the same token.
timeout 60 "$LAKEGATE" token --data-dir "$WORK/lg-embedded" --sub alice --groups analysts --ttl 2h >"$WORK/alice.jwt"
if [ -n "$SIDECAR" ]; then
  LAKEGATE_LOG=warn "$SIDECAR" --token-file "$WORK/alice.jwt" --upstream "http://127.0.0.1:$P_LGE" \
    --listen "127.0.0.1:$P_SC" >"$WORK/sidecar.log" 2>&1 &
  SC_PID=$!
  PIDS+=("$SC_PID")
  wait_port "$P_SC"
fi

head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$WORK/big.bin"
head -c $((SCALE_MIB * 1024 * 1024)) /dev/urandom >"$WORK/scale.bin"
head -c $SMALL_BYTES /dev/urandom >"$WORK/small.bin"
cp "$WORK/small.bin" "$WORK/static/lake/sales/bench/small.bin"
cp "$WORK/big.bin" "$WORK/static/lake/sales/bench/big.bin"
chmod 644 "$WORK/static/lake/sales/bench/"*.bin

# Presigned URLs (Lakegate credentials), the 4 KiB object put into the embedded store, a header signer.
timeout 60 "$LAKEGATE" credentials --data-dir "$WORK/lg-remote" --sub alice --groups analysts --ttl 2h >"$WORK/creds-remote.json"
timeout 60 "$LAKEGATE" credentials --data-dir "$WORK/lg-embedded" --sub alice --groups analysts --ttl 2h >"$WORK/creds-embedded.json"
timeout 120 "$PY" - "$WORK" "$P_LG" "$P_LGE" "${SIDECAR:+$P_SC}" <<'EOF'
import json, sys, boto3
from botocore.config import Config
work, p_lg, p_lge, p_sc = sys.argv[1:]
def client(port, creds):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}), **creds)
def vended(name):
    c = json.load(open(f"{work}/{name}"))
    return dict(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
targets = {"lakegate": client(p_lg, vended("creds-remote.json")), "embedded": client(p_lge, vended("creds-embedded.json"))}
if p_sc:
    targets["sidecar"] = client(p_sc, dict(aws_access_key_id="x", aws_secret_access_key="x"))
targets["embedded"].put_object(Bucket="lake", Key="sales/bench/small.bin", Body=open(f"{work}/small.bin", "rb").read())
urls = {}
for name, c in targets.items():
    presign = lambda method, key: c.generate_presigned_url(method, Params={"Bucket": "lake", "Key": f"sales/bench/{key}"}, ExpiresIn=7200)
    urls[f"{name}:small"] = presign("get_object", "small.bin")
    # Through the remote Lakegate the big GET reads the store's big.bin and the PUT writes a file of its own;
    # into the embedded store (and through the sidecar) the PUT stores the object the GET then reads.
    big = {"lakegate": "big.bin", "embedded": "big.bin", "sidecar": "big-sidecar.bin"}[name]
    urls[f"{name}:get"] = presign("get_object", big)
    urls[f"{name}:put"] = presign("put_object", {"lakegate": "put-lakegate.bin"}.get(name, big))
urls["embedded:scale-put"] = targets["embedded"].generate_presigned_url("put_object", Params={"Bucket": "lake", "Key": "sales/bench/scale.bin"}, ExpiresIn=7200)
urls["embedded:scale"] = targets["embedded"].generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "sales/bench/scale.bin"}, ExpiresIn=7200)
json.dump(urls, open(f"{work}/urls.json", "w"))
EOF
url() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/urls.json" "$1"; }
cat >"$WORK/sign.py" <<'EOF'
# Signs one GET with SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-SHA256) and
# prints them, one "Name: value" a line, for the load tool to replay.
import json, sys
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, creds = sys.argv[1:]
c = json.load(open(creds))
request = AWSRequest(method="GET", url=url)
S3SigV4Auth(Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]), "s3", "us-east-1").add_auth(request)
for name, value in request.headers.items():
    print(f"{name}: {value}")
EOF
signed_headers() { # url -> SIGNED (array of "Name: value")
  mapfile -t SIGNED < <(timeout 60 "$PY" "$WORK/sign.py" "$1" "$WORK/creds-embedded.json")
  [ "${#SIGNED[@]}" -ge 4 ] || fatal "signing failed"
}
cat >"$WORK/report.lua" <<'EOF'
-- One machine-readable line after the run: requests, duration (us), bytes, p50 and p99 latency (us), then the
-- errors: connect, read, write, status (answers >= 400), timeout.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# --- the targets of the 4 KiB GETs: name -> URL, and headers where the target needs them -----------------------
SMALL_PATH=lake/sales/bench/small.bin
declare -A SMALL_URL=(
  [direct]="http://127.0.0.1:$P_STORE/$SMALL_PATH"
  [proxy]="http://127.0.0.1:$P_PROXY/$SMALL_PATH"
  [lakegate]="$(url lakegate:small)"
  [bearer]="http://127.0.0.1:$P_LGE/$SMALL_PATH"
  [presigned]="$(url embedded:small)"
  [header]="http://127.0.0.1:$P_LGE/$SMALL_PATH"
)
SMALL_TARGETS="direct proxy lakegate bearer presigned header"
if [ -n "$SIDECAR" ]; then SMALL_URL[sidecar]="$(url sidecar:small)"; SMALL_TARGETS="$SMALL_TARGETS sidecar"; fi
# The processes that serve a target's GETs, whose CPU is counted per request: behind a hop, the hop and the store.
NGINX_PID=$(cat "$WORK/nginx.pid")
PROXY_PID=$(cat "$WORK/nginx-proxy.pid")
serving_pids() { # target
  case $1 in
    direct) with_children "$NGINX_PID" ;;
    proxy) echo $(with_children "$PROXY_PID") $(with_children "$NGINX_PID") ;;
    lakegate) echo "$LG_PID" $(with_children "$NGINX_PID") ;;
    sidecar) echo "$SC_PID $LGE_PID" ;;
    *) echo "$LGE_PID" ;;
  esac
}
headers_for() { # target -> HDR (array of "Name: value")
  HDR=()
  case $1 in
    bearer) HDR=("Authorization: Bearer $(cat "$WORK/alice.jwt")") ;;
    header) signed_headers "${SMALL_URL[header]}"; HDR=("${SIGNED[@]}") ;;
  esac
}

# Before anything is measured: every target answers 200 with the object's bytes.
check_small() { # target
  headers_for "$1"
  local args=() h code
  for h in "${HDR[@]}"; do args+=(-H "$h"); done
  code=$(curl -sS --max-time 30 -o "$WORK/check.out" -w '%{http_code}' "${args[@]}" "${SMALL_URL[$1]}") || code="curl error"
  [ "$code" = 200 ] || [ "$code" = 206 ] || fatal "$1 answered $code to a 4 KiB GET: $(head -c 400 "$WORK/check.out")"
  cmp -s "$WORK/check.out" "$WORK/small.bin" || fatal "$1 answered 200 without the object's bytes"
}
for t in $SMALL_TARGETS; do check_small "$t"; done

# Lakegate refuses a request with 503 and no audit record when the record finds no room in the audit queue: a
# count to tell that apart from other errors when a load run saw answers other than 200, and how many of the audit
# writer's batches were slow enough (a sync of the disk) to let the queue fill.
refusals() { # target -> ", Lakegate's audit refusals so far: N", or nothing for nginx
  local port
  case $1 in direct | proxy) return ;; lakegate) port=$LG_CONTROL ;; *) port=$LGE_CONTROL ;; esac
  curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | awk '
    /^lakegate_audit_refusals_total/ {n += $NF}
    /^lakegate_audit_write_seconds_bucket.*le="0.1"/ {fast += $NF}
    /^lakegate_audit_write_seconds_count/ {all += $NF}
    END {printf ", Lakegate'"'"'s audit refusals so far: %d (audit batches and checkpoints that took over 100 ms to write and sync: %d)\n", n, all - fast}'
}
wrk_run() { # target connections -> RES="rps p50ms p99ms cpu-us-per-request"
  local target=$1 c=$2 threads=$(( $2 < NPROC ? $2 : NPROC )) args=() h line pids cpu0
  headers_for "$target"
  for h in "${HDR[@]}"; do args+=(-H "$h"); done
  read -ra pids <<<"$(serving_pids "$target")"
  cpu0=$(cpu_ticks "${pids[@]}")
  timeout $((SECONDS_EACH + 60)) wrk -t "$threads" -c "$c" -d "${SECONDS_EACH}s" --timeout 5s --latency \
    -s "$WORK/report.lua" "${args[@]}" "${SMALL_URL[$target]}" >"$WORK/wrk.txt" 2>&1 || true
  local cpu=$(( $(cpu_ticks "${pids[@]}") - cpu0 ))
  line=$(grep '^WRK ' "$WORK/wrk.txt" || true)
  if [ -z "$line" ]; then
    fail "$target, $c connections: wrk gave no result: $(tail -3 "$WORK/wrk.txt" | tr '\n' ' ')"
    RES="0 0 0 n/a"; return
  fi
  local reqs dur bytes p50 p99 econnect eread ewrite estatus etimeout
  read -r _ reqs dur bytes p50 p99 econnect eread ewrite estatus etimeout <<<"$line"
  [ "$estatus" -eq 0 ] || fail "$target, $c connections: $estatus of $reqs answers were errors (>= 400)$(refusals "$target")"
  [ $((econnect + eread + ewrite + etimeout)) -eq 0 ] ||
    fail "$target, $c connections: socket errors: connect $econnect, read $eread, write $ewrite, timeout $etimeout"
  if [ "$reqs" -eq 0 ] || [ $((bytes / reqs)) -lt $SMALL_BYTES ]; then
    fail "$target, $c connections: $reqs answers, $bytes bytes: not the 4 KiB object each"
  fi
  RES="$(awk -v n="$reqs" -v d="$dur" -v a="$p50" -v b="$p99" 'BEGIN { printf "%.0f %.2f %.2f", n / (d / 1e6), a / 1000, b / 1000 }') $(per_op "$cpu" "$reqs")"
}

# --- large objects -----------------------------------------------------------------------------------------------
transfer() { # label ok-codes expected-bytes sink curl-args... -> MIBS (MiB/s; 0 if it failed)
  local label=$1 ok=$2 size=$3 sink=$4 out code up down sup sdown bytes speed; shift 4
  MIBS=0
  out=$(curl -sS --max-time 300 -o "$sink" -w '%{http_code} %{size_upload} %{size_download} %{speed_upload} %{speed_download}' "$@") \
    || { fail "$label: curl failed ($out)"; return; }
  read -r code up down sup sdown <<<"$out"
  if [ "$up" -gt 0 ]; then bytes=$up speed=$sup; else bytes=$down speed=$sdown; fi
  if [[ " $ok " != *" $code "* ]]; then
    # A discarded answer is asked for again, to show what it said (an error body is small).
    [ "$sink" = /dev/null ] && curl -sS --max-time 30 --max-filesize 65536 -o "$WORK/transfer.out" "$@" || true
    fail "$label: answered $code: $(head -c 300 "$WORK/transfer.out" 2>/dev/null)"; return
  fi
  [ "$bytes" -eq "$size" ] || { fail "$label: moved $bytes bytes, not $size"; return; }
  MIBS=$(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1048576 }')
}
BIG=$((BIG_MIB * 1024 * 1024))
put_big() { transfer "$1 PUT" "$2" "$BIG" "$WORK/transfer.out" -T "$WORK/big.bin" "$3"; }
# A GET's body is discarded, as the scale step's are: written to a file, 256 MiB of dirty pages and their
# write-back would share the two cores with the servers being compared (and the disk with the PUTs).
get_big() { transfer "$1 GET" "200" "$BIG" /dev/null "$2"; }
dd_big() { # dd flags... -> MIBS: the same bytes to the same file system
  local out secs
  MIBS=0
  out=$(LC_ALL=C timeout 300 dd if="$WORK/big.bin" of="$WORK/dd.bin" bs=1M "$@" 2>&1) || { fail "dd $*: $out"; return; }
  secs=$(echo "$out" | awk '/copied/ {print $(NF-3)}')
  rm -f "$WORK/dd.bin"
  MIBS=$(awk -v b="$BIG" -v s="$secs" 'BEGIN { printf "%.0f", b / 1048576 / s }')
}
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss() { # pid VmRSS|VmHWM -> MiB; a process that is gone fails the run
  awk -v k="$2:" '$1 == k {print int($2/1024)}' /proc/"$1"/status 2>/dev/null ||
    { fail "process $1 exited during the run"; echo "?"; }
}

echo "measuring: ${BIG_MIB} MiB objects, $BIG_ROUNDS rounds ..." >&2
declare -A RUNS
STORE=http://127.0.0.1:$P_STORE/lake/sales/bench PROXY=http://127.0.0.1:$P_PROXY/lake/sales/bench
DAV_OK="200 201 204"
BIG_TARGETS="direct proxy lakegate embedded"
declare -A BIG_PUT=([direct]="$STORE/put-direct.bin" [proxy]="$PROXY/put-proxy.bin" [lakegate]="$(url lakegate:put)"
  [embedded]="$(url embedded:put)")
declare -A BIG_GET=([direct]="$STORE/big.bin" [proxy]="$PROXY/big.bin" [lakegate]="$(url lakegate:get)"
  [embedded]="$(url embedded:get)")
declare -A PUT_OK=([direct]="$DAV_OK" [proxy]="$DAV_OK" [lakegate]="$DAV_OK" [embedded]=200 [sidecar]=200)
if [ -n "$SIDECAR" ]; then
  BIG_TARGETS="$BIG_TARGETS sidecar" BIG_PUT[sidecar]=$(url sidecar:put) BIG_GET[sidecar]=$(url sidecar:get)
fi
for _ in $(seq 1 "$BIG_ROUNDS"); do
  for t in $BIG_TARGETS; do put_big "$t" "${PUT_OK[$t]}" "${BIG_PUT[$t]}"; RUNS[put:$t]+=" $MIBS"; done
  dd_big conv=fdatasync; RUNS[put:dd-sync]+=" $MIBS"
  dd_big; RUNS[put:dd]+=" $MIBS"
  timeout 300 sync  # the GETs below do not share the disk with the PUTs' write-back
  # A GET moves no disk: it is repeated, the targets alternated, so that its median rests on more transfers
  # than the PUTs' (on this shared 2-core machine one 256 MiB GET's rate moves by a quarter from one to the next).
  for _ in $(seq 1 "$BIG_GETS"); do
    for t in $BIG_TARGETS; do get_big "$t" "${BIG_GET[$t]}"; RUNS[get:$t]+=" $MIBS"; done
  done
done
# The timed GETs checked status and size; one more of each, kept, is checked byte for byte.
for t in $BIG_TARGETS; do
  curl -sS --max-time 300 -o "$WORK/big-check.out" "${BIG_GET[$t]}" && cmp -s "$WORK/big-check.out" "$WORK/big.bin" ||
    fail "$t GET: the ${BIG_MIB} MiB object's bytes differ"
  rm -f "$WORK/big-check.out"
done
for f in put-direct put-proxy put-lakegate; do
  [ "$(stat -c %s "$WORK/static/lake/sales/bench/$f.bin" 2>/dev/null || echo 0)" -eq "$BIG" ] ||
    fail "the WebDAV store does not hold $f.bin at full size"
  rm -f "$WORK/static/lake/sales/bench/$f.bin"
done
declare -A B
for k in "${!RUNS[@]}"; do B[$k]=$(echo "${RUNS[$k]}" | median); done

# --- 4 KiB GETs ------------------------------------------------------------------------------------------------
echo "measuring: 4 KiB GETs at $CONCURRENCY connections, ${SECONDS_EACH}s each ..." >&2
declare -A SMALL
for c in $CONCURRENCY; do
  for t in $SMALL_TARGETS; do
    # BENCH_PROFILE: one cell (the bearer GETs into the embedded store at 16 connections unless
    # BENCH_PROFILE_CELL names another), profiled (benches/flamegraph.sh).
    if [ "$t:$c" = "$PROFILE_CELL" ]; then profile_start "s3-get-4k-$t-$c" "$(serving_pids "$t" | cut -d' ' -f1)" "$SECONDS_EACH"; fi
    wrk_run "$t" "$c"; SMALL[$t:$c]=$RES
    if [ "$t:$c" = "$PROFILE_CELL" ]; then profile_finish "s3-get-4k-$t-$c"; fi
  done
done
RSS_LG=$(rss "$LG_PID" VmHWM)

# --- scale: many concurrent large GETs from the embedded store ---------------------------------------------------
if [ "$SCALE_CLIENTS" -gt 0 ]; then
  echo "measuring: $SCALE_CLIENTS concurrent GETs of a $SCALE_MIB MiB object (at most ${SCALE_TIMEOUT}s) ..." >&2
  SCALE=$((SCALE_MIB * 1024 * 1024))
  transfer "scale object PUT" 200 "$SCALE" "$WORK/transfer.out" -T "$WORK/scale.bin" "$(url embedded:scale-put)"
  [ "$MIBS" != 0 ] || fatal "could not store the scale object"
  timeout 300 sync
  SCALE_URL=$(url embedded:scale)
  RSS_BEFORE=$(rss "$LGE_PID" VmRSS) HWM_BEFORE=$(rss "$LGE_PID" VmHWM)
  (peak=0; while kill -0 "$LGE_PID" 2>/dev/null; do
     r=$(awk '$1 == "VmRSS:" {print $2}' /proc/"$LGE_PID"/status); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$WORK/rss-peak"
     sleep 0.2; done) &
  SAMPLER=$!
  PIDS+=("$SAMPLER")
  START=$(date +%s.%N)
  # timeout (not in the foreground) signals its whole process group, the curls included.
  # Each input line (the URL) is one curl's last argument.
  timeout --kill-after=10 $((SCALE_TIMEOUT + 60)) \
    xargs -d '\n' -n 1 -P "$SCALE_CLIENTS" curl -sS --max-time "$SCALE_TIMEOUT" -o /dev/null \
      -w '%{http_code} %{size_download} %{time_total}\n' \
    < <(yes "$SCALE_URL" | head -n "$SCALE_CLIENTS") >>"$WORK/scale.txt" 2>"$WORK/scale.err" &
  SCALE_PID=$!
  PIDS+=("$SCALE_PID")
  wait "$SCALE_PID" || true
  END=$(date +%s.%N)
  kill "$SAMPLER" 2>/dev/null || true
  HWM_AFTER=$(rss "$LGE_PID" VmHWM) RSS_PEAK=$(( $(cat "$WORK/rss-peak" 2>/dev/null || echo 0) / 1024 ))
  read -r S_DONE S_NON200 S_SHORT S_BYTES S_MED S_MAX < <(sort -k3 -g "$WORK/scale.txt" | awk -v size="$SCALE" '
    { n++; bytes += $2; t[n] = $3; if ($1 != 200) bad++; else if ($2 != size) short++; else done++ }
    END { printf "%d %d %d %.0f %.1f %.1f\n", done, bad, short, bytes, (n ? t[int((n+1)/2)] : 0), (n ? t[n] : 0) }')
  S_WALL=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')
  S_MIBS=$(awk -v b="$S_BYTES" -v s="$S_WALL" 'BEGIN { printf "%.0f", b / 1048576 / s }')
  S_ENDED=$(wc -l <"$WORK/scale.txt")
  [ "$S_NON200" -eq 0 ] || fail "scale: $S_NON200 of $SCALE_CLIENTS GETs answered other than 200 ($(awk '$1 != 200 {print $1}' "$WORK/scale.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ','))"
  [ "$S_ENDED" -eq "$SCALE_CLIENTS" ] || fail "scale: only $S_ENDED of $SCALE_CLIENTS curl clients reported"
  # A client cut off by its time limit is expected when the machine is too slow for the settings; any other
  # transfer error is not.
  S_TIMED_OUT=$(grep -c 'Operation timed out' "$WORK/scale.err" || true)
  S_OTHER=$(grep -v 'Operation timed out' "$WORK/scale.err" | grep -c . || true)
  [ "$S_OTHER" -eq 0 ] || fail "scale: curl errors other than the time limit: $(grep -v 'Operation timed out' "$WORK/scale.err" | sort | uniq -c | head -5 | tr -s ' ' | tr '\n' ';')"
fi
RSS_LGE=$(rss "$LGE_PID" VmHWM)
if [ -n "$SIDECAR" ]; then RSS_SC=$(rss "$SC_PID" VmHWM); fi

# --- report -------------------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rps() { echo "$1" | cut -d' ' -f1; }
cell() { echo "$(rps "$1") ($(echo "$1" | cut -d' ' -f2)/$(echo "$1" | cut -d' ' -f3))"; }
version() { "$@" 2>&1 | head -1 || true; }
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && REV="$REV (working tree modified)"

cat <<EOF
Command: \`$COMMAND\`

Machine: $NPROC cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load average at the start $LOAD_AT_START; stores and \`dd\` on $(df -T "$WORK" | awk 'NR==2 {print $2 " (" $1 ")"}'); loopback; $(date -u '+%Y-%m-%d %H:%M UTC')

Versions: $(version "$LAKEGATE" --version) (\`$LAKEGATE\`, built $(date -u -r "$LAKEGATE" '+%Y-%m-%d %H:%M UTC'); the script's checkout: $REV), $(version nginx -v | sed 's/^nginx version: //'), $(version wrk -v | cut -d' ' -f1-2), $(version curl --version | cut -d' ' -f1-2)

Small GETs: \`wrk --latency\`, ${SECONDS_EACH}s per cell, threads = min(connections, $NPROC); req/s (p50/p99 ms). Large objects: \`curl\`, median of $BIG_ROUNDS PUTs and $((BIG_ROUNDS * BIG_GETS)) GETs of each target (alternated), MiB/s, GET bodies discarded (\`-o /dev/null\`). Every answer checked: 200 and the object's size (201/204 for WebDAV PUTs).

### Remote store: the same nginx static store behind each hop

The store is nginx serving the bucket directory as static files (GET) and taking PUTs as WebDAV (\`dav_methods PUT\`, answering 201/204); the nginx proxy is a second nginx with worker processes of its own, as a hop in front of a store is; Lakegate's \`[s3.backend] kind = "remote"\` signs its requests to it and nginx ignores the signature. No S3 server in the path: the s3s-fs binary used before lacks \`TCP_NODELAY\` and added ~43 ms to every small response.

| ${BIG_MIB} MiB object, MiB/s | direct | nginx proxy | lakegate | lakegate / direct | lakegate / nginx proxy |
|---|---|---|---|---|---|
| GET | ${B[get:direct]} | ${B[get:proxy]} | ${B[get:lakegate]} | $(ratio "${B[get:lakegate]}" "${B[get:direct]}") | $(ratio "${B[get:lakegate]}" "${B[get:proxy]}") |
| PUT (WebDAV store) | ${B[put:direct]} | ${B[put:proxy]} | ${B[put:lakegate]} | $(ratio "${B[put:lakegate]}" "${B[put:direct]}") | $(ratio "${B[put:lakegate]}" "${B[put:proxy]}") |

| 4 KiB GET, connections | direct | nginx proxy | lakegate (presigned URL) | lakegate / direct | lakegate / nginx proxy |
|---|---|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  d=${SMALL[direct:$c]} n=${SMALL[proxy:$c]} l=${SMALL[lakegate:$c]}
  echo "| $c | $(cell "$d") | $(cell "$n") | $(cell "$l") | $(ratio "$(rps "$l")" "$(rps "$d")") | $(ratio "$(rps "$l")" "$(rps "$n")") |"
done
cat <<EOF

### Embedded store vs nginx static files, by kind of authentication

The same 4 KiB object: nginx serving it as a static file (the "direct" cells above, the same measurement), and Lakegate's embedded store with \`Authorization: Bearer <jwt>\` (dev issuer), a SigV4 presigned URL, and SigV4 header signing (session credentials, signed once per cell with botocore and replayed).

| 4 KiB GET, connections | nginx static | bearer | presigned URL | SigV4 header | bearer / static | presigned / static | SigV4 header / static |
|---|---|---|---|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  s=${SMALL[direct:$c]} b=${SMALL[bearer:$c]} p=${SMALL[presigned:$c]} h=${SMALL[header:$c]}
  echo "| $c | $(cell "$s") | $(cell "$b") | $(cell "$p") | $(cell "$h") | $(ratio "$(rps "$b")" "$(rps "$s")") | $(ratio "$(rps "$p")" "$(rps "$s")") | $(ratio "$(rps "$h")" "$(rps "$s")") |"
done
cat <<EOF

| ${BIG_MIB} MiB object, MiB/s | embedded | reference | embedded / reference |
|---|---|---|---|
| GET | ${B[get:embedded]} | ${B[get:direct]} (nginx static file) | $(ratio "${B[get:embedded]}" "${B[get:direct]}") |
| PUT | ${B[put:embedded]} | ${B[put:dd-sync]} (\`dd bs=1M conv=fdatasync\`, same file system) | $(ratio "${B[put:embedded]}" "${B[put:dd-sync]}") |
| PUT | ${B[put:embedded]} | ${B[put:dd]} (\`dd bs=1M\`, no sync: the embedded store does not fsync objects either) | $(ratio "${B[put:embedded]}" "${B[put:dd]}") |
EOF
cpu() { echo "$1" | cut -d' ' -f4; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.1f", a - b; else print "n/a" }'; }
cat <<EOF

### CPU per 4 KiB GET

The user and system time of the serving processes (\`/proc/<pid>/stat\`, all threads) over each
wrk run above, divided by its requests, in µs. nginx counts its master and workers; in front of the remote store,
the hop and the store together (the proxy's nginx and the store's). The load tool's own CPU is not
counted. Ratios as above: the reference's CPU over Lakegate's (below 1: Lakegate spends more per request).

| connections | nginx static | bearer | presigned URL | SigV4 header | static / bearer | static / presigned | static / SigV4 header |
|---|---|---|---|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  s=$(cpu "${SMALL[direct:$c]}") b=$(cpu "${SMALL[bearer:$c]}") p=$(cpu "${SMALL[presigned:$c]}") h=$(cpu "${SMALL[header:$c]}")
  echo "| $c | $s | $b | $p | $h | $(ratio "$s" "$b") | $(ratio "$s" "$p") | $(ratio "$s" "$h") |"
done
cat <<EOF

| connections | nginx proxy and store | lakegate (presigned URL) and store | (proxy and store) / (lakegate and store) | the hop alone (less the direct cell's store CPU): nginx proxy / lakegate |
|---|---|---|---|---|
EOF
for c in $CONCURRENCY; do
  s=$(cpu "${SMALL[direct:$c]}") n=$(cpu "${SMALL[proxy:$c]}") l=$(cpu "${SMALL[lakegate:$c]}")
  echo "| $c | $n | $l | $(ratio "$n" "$l") | $(minus "$n" "$s") / $(minus "$l" "$s") = $(ratio "$(minus "$n" "$s")" "$(minus "$l" "$s")") |"
done
if [ "$SCALE_CLIENTS" -gt 0 ]; then
  cat <<EOF

### Scale: $SCALE_CLIENTS concurrent GETs of a $SCALE_MIB MiB object (embedded store)

One presigned URL, $SCALE_CLIENTS \`curl\` processes started together (\`xargs -P\`), bodies discarded, each allowed ${SCALE_TIMEOUT}s. Lakegate's RSS sampled every 0.2 s.

| clients | complete (200, full size) | cut off (200, partial body; $S_TIMED_OUT by the time limit) | total received | wall time | throughput | per GET, median / max | Lakegate RSS before | peak RSS during (sampled) | VmHWM before / after |
|---|---|---|---|---|---|---|---|---|---|
| $SCALE_CLIENTS | $S_DONE | $S_SHORT | $(awk -v b="$S_BYTES" 'BEGIN { printf "%.0f MiB", b / 1048576 }') | ${S_WALL} s | $S_MIBS MiB/s | $S_MED / $S_MAX s | $RSS_BEFORE MiB | $RSS_PEAK MiB | $HWM_BEFORE / $HWM_AFTER MiB |
EOF
fi
echo
echo "Lakegate peak RSS (VmHWM) at the end: ${RSS_LG} MiB in front of the nginx store, ${RSS_LGE} MiB with the embedded store."
if [ -n "$SIDECAR" ]; then
  cat <<EOF

### A pod's sidecar: client -> sidecar -> Lakegate (embedded store) vs client -> Lakegate directly

Presigned URLs both ways (the sidecar's signed with dummy keys, which it replaces by its own session's signature).

| | via sidecar | direct to Lakegate | sidecar / direct |
|---|---|---|---|
| PUT ${BIG_MIB} MiB, MiB/s | ${B[put:sidecar]} | ${B[put:embedded]} | $(ratio "${B[put:sidecar]}" "${B[put:embedded]}") |
| GET ${BIG_MIB} MiB, MiB/s | ${B[get:sidecar]} | ${B[get:embedded]} | $(ratio "${B[get:sidecar]}" "${B[get:embedded]}") |
EOF
  for c in $CONCURRENCY; do
    s=${SMALL[sidecar:$c]} e=${SMALL[presigned:$c]}
    echo "| 4 KiB GET, $c connections, req/s (p50/p99 ms) | $(cell "$s") | $(cell "$e") | $(ratio "$(rps "$s")" "$(rps "$e")") |"
  done
  echo
  echo "Sidecar peak RSS (VmHWM): ${RSS_SC} MiB."
fi

if [ -s "$WORK/failures" ]; then
  n=$(wc -l <"$WORK/failures")
  echo
  echo "**This run is not valid: $n check(s) failed.**"
  sed 's/^/- /' "$WORK/failures"
  { echo; echo "benches/s3.sh: $n check(s) failed:"; sed 's/^/  /' "$WORK/failures"
    for log in lg-remote/serve.log lg-embedded/serve.log sidecar.log nginx-error.log nginx-proxy-error.log; do
      [ -s "$WORK/$log" ] && { echo "--- the end of $log:"; tail -n 15 "$WORK/$log"; }
    done; } >&2
  exit 1
fi
