#!/usr/bin/env bash
# SQL gateway benchmark, in one run, loopback only, bounded in time (about 5 minutes plus the build):
#   1. pgbench select-only: directly on PostgreSQL vs through Lakegate (PostgreSQL backend) vs through pgbouncer,
#      with the simple query protocol, with the extended one, and with a connection for each transaction, in
#      alternated rounds;
#   2. one row-filtered aggregate through Lakegate vs the same filter as native row level security; a pool's
#      ping (`SELECT 1`) through Lakegate vs directly vs through pgbouncer; a tool's catalog query through
#      Lakegate vs directly, with each protocol;
#   3. rewrite time per query (criterion, crates/sql/benches/rewrite.rs).
# Prints a Markdown table of the results. Usage: benches/sql.sh   (DURATION=8 PGBENCH_ROUNDS=3 CLIENTS=4 SCALE=2 AGG_ROUNDS=8
# AGG_SECONDS=3 to change; LAKEGATE_BIN=path to use an existing binary instead of building a release one;
# SKIP_CRITERION=1 to skip 3;
# each pgbench run also reports the CPU per query of the proxy and of PostgreSQL (benches/cpu.sh);
# BENCH_PROFILE=DIR to profile Lakegate during its pgbench runs through it, DIR/sql-pgbench-select.svg and
# DIR/sql-pgbench-select-extended.svg: benches/flamegraph.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps  # protoc, for any build below (cargo build or bench) on a fresh machine
. benches/flamegraph.sh
. benches/cpu.sh
DURATION=${DURATION:-8}
PGBENCH_ROUNDS=${PGBENCH_ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
SCALE=${SCALE:-2}
AGG_ROUNDS=${AGG_ROUNDS:-8}
AGG_SECONDS=${AGG_SECONDS:-3}

if [ -z "${LAKEGATE_BIN:-}" ]; then
  cargo build --release --quiet
  LAKEGATE_BIN="${CARGO_TARGET_DIR:-target}/release/lakegate"
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/lakegate-bench.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PG_PORT=$(free_port); LG_SQL=$(free_port); LG_CTL=$(free_port); LG_S3=$(free_port); BOUNCER=$(free_port)
LG_PID=""; BOUNCER_PID=""
cleanup() {
  [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null || true
  [ -n "$BOUNCER_PID" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  # runuser does not pass the signal on: end pgbouncer itself.
  pkill -f "pgbouncer $WORK/pgbouncer.ini" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"

# --- PostgreSQL with pgbench's tables, a backend role for Lakegate and a role under RLS --------------------
as_pg "$PGBIN/initdb" -A trust -U postgres --no-sync -E UTF8 -D "$WORK/pg" >/dev/null
as_pg "$PGBIN/pg_ctl" -w -D "$WORK/pg" -l "$WORK/pg.log" \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >/dev/null
PSQL="$PGBIN/psql -X -q -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -v ON_ERROR_STOP=1"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
$PSQL <<'SQL'
CREATE ROLE lakegate_backend LOGIN;
GRANT SELECT ON pgbench_accounts, pgbench_branches TO lakegate_backend;
CREATE ROLE rls_reader LOGIN;
GRANT SELECT ON pgbench_accounts TO rls_reader;
ALTER TABLE pgbench_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY backend_sees_all ON pgbench_accounts FOR SELECT TO lakegate_backend USING (true);
CREATE POLICY branch_one ON pgbench_accounts FOR SELECT TO rls_reader USING (bid = 1);
SQL

# --- Lakegate with the two pgbench tables on the PostgreSQL backend -----------------------------------------
mkdir -p "$WORK/lg" "$WORK/policies"
cp policies/lakegate.cedarschema "$WORK/policies/"
cat > "$WORK/policies/catalog.toml" <<'TOML'
[[tables]]
name = "public.pgbench_accounts"
backend = "bench"
columns = [{ name = "aid", type = "integer" }, { name = "bid", type = "integer" },
           { name = "abalance", type = "integer" }, { name = "filler", type = "text" }]
[[tables]]
name = "public.pgbench_branches"
backend = "bench"
columns = [{ name = "bid", type = "integer" }, { name = "bbalance", type = "integer" }, { name = "filler", type = "text" }]
TOML
cat > "$WORK/policies/bench.cedar" <<'CEDAR'
@id("bench-all")
permit (principal == User::"bench", action == Action::"SelectTable", resource in Database::"public");
@id("filtered-branch-one")
@row_filter("bid = 1")
permit (principal == User::"filtered", action == Action::"SelectTable", resource in Table::"public.pgbench_accounts");
CEDAR
cat > "$WORK/lakegate.toml" <<TOML
[control]
listen = "127.0.0.1:$LG_CTL"
[s3]
listen = "127.0.0.1:$LG_S3"
[sql]
listen = "127.0.0.1:$LG_SQL"
[[sql.postgres]]
name = "bench"
url = "host=127.0.0.1 port=$PG_PORT user=lakegate_backend dbname=postgres"
pool_size = $((CLIENTS * 2))
[policy]
dir = "$WORK/policies"
TOML
LAKEGATE_LOG=warn "$LAKEGATE_BIN" serve --config "$WORK/lakegate.toml" --data-dir "$WORK/lg" >"$WORK/lg.log" 2>&1 &
LG_PID=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$LG_SQL) 2>/dev/null && break; sleep 0.1; done
BENCH_TOKEN=$("$LAKEGATE_BIN" token --data-dir "$WORK/lg" --sub bench --ttl 1h)
FILTERED_TOKEN=$("$LAKEGATE_BIN" token --data-dir "$WORK/lg" --sub filtered --ttl 1h)

# --- pgbouncer (transaction pooling) in front of the same PostgreSQL ----------------------------------------
echo '"postgres" ""' > "$WORK/userlist.txt"
cat > "$WORK/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $((CLIENTS * 2))
unix_socket_dir =
logfile = $WORK/pgbouncer.log
INI
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
as_pg /usr/sbin/pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$BOUNCER) 2>/dev/null && break; sleep 0.1; done

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1; }
latency() { sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' | head -1; }
run_pgbench() { # port user password extra-args...
  local port=$1 user=$2 pass=$3; shift 3
  PGPASSWORD=$pass timeout $((DURATION + 60)) "$PGBIN/pgbench" -n -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$user" "$@" postgres 2>&1
}

# CPU per query of the proxy (Lakegate or pgbouncer) and of PostgreSQL (the postmaster and its children), sampled
# inside the run: the backends of pgbench's own connections end with it.
PG_MASTER=$(head -1 "$WORK/pg/postmaster.pid")
BOUNCER_PIDS=$(pgrep -f "pgbouncer $WORK/pgbouncer.ini" | tr '\n' ' ')
CPU_FROM=$(( DURATION >= 6 ? 2 : 1 )); CPU_FOR=$(( DURATION - 2 * CPU_FROM ))
measured() { # proxy-pids port user password pgbench-args... -> "tps proxy-us proxy-user-us postgres-us" per query
  local proxy=$1 port=$2 user=$3 pass=$4 out p0 u0 q0 t0 p1 u1 q1 t1; shift 4
  out=$(mktemp "$WORK/pgbench.XXXXXX")
  run_pgbench "$port" "$user" "$pass" "$@" >"$out" &
  local pgbench=$!
  sleep "$CPU_FROM"
  # shellcheck disable=SC2086 # lists of pids
  p0=$(cpu_ticks $proxy); u0=$(cpu_user_ticks $proxy); q0=$(cpu_ticks $(with_children "$PG_MASTER")); t0=$(date +%s.%N)
  sleep "$CPU_FOR"
  # shellcheck disable=SC2086
  p1=$(cpu_ticks $proxy); u1=$(cpu_user_ticks $proxy); q1=$(cpu_ticks $(with_children "$PG_MASTER")); t1=$(date +%s.%N)
  wait "$pgbench" || true
  local rate queries
  rate=$(tps <"$out")
  queries=$(awk -v r="${rate:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", r * (b - a) }')
  if [ -n "$proxy" ]; then
    echo "${rate:-0} $(per_op $((p1 - p0)) "$queries") $(per_op $((u1 - u0)) "$queries") $(per_op $((q1 - q0)) "$queries")"
  else
    echo "${rate:-0} - - $(per_op $((q1 - q0)) "$queries")"
  fi
}
# Alternated rounds, as for the aggregate below: one run a side could not tell Lakegate's ratio to pgbouncer within
# a sixth on this machine. Each round runs the three in turn, Lakegate and pgbouncer swapped every other round;
# reported: the median of each side's rounds and the range of Lakegate's per-round ratio to pgbouncer. The
# extended protocol (Parse, Bind, Describe, Execute, Sync per query, as libpq's PQexecParams and most drivers send
# it) carries the aid as a parameter.
pgbench_rounds() { # label pgbench-args... -> lines "round target tps proxy-us proxy-user-us postgres-us"
  local label=$1 round target order; shift
  for round in $(seq "$PGBENCH_ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="direct lakegate bouncer"; else order="direct bouncer lakegate"; fi
    for target in $order; do
      case $target in
        direct) echo "$round $target $(measured "" "$PG_PORT" postgres "" "$@")" ;;
        lakegate) # profiled in the first round only
          if [ "$round" -eq 1 ]; then profile_start "$label" "$LG_PID" "$DURATION"; fi
          echo "$round $target $(measured "$LG_PID" "$LG_SQL" bench "$BENCH_TOKEN" "$@")"
          if [ "$round" -eq 1 ]; then profile_finish "$label"; fi
          ;;
        bouncer) echo "$round $target $(measured "$BOUNCER_PIDS" "$BOUNCER" postgres "" "$@")" ;;
      esac
    done
  done
}
pgbench_rounds sql-pgbench-select -S -c "$CLIENTS" -j "$CLIENTS" >"$WORK/rounds-simple"
pgbench_rounds sql-pgbench-select-extended -S -M extended -c "$CLIENTS" -j "$CLIENTS" >"$WORK/rounds-extended"
# A connection for each transaction (`-C`), as clients that connect per statement do (a serverless function, a
# script calling psql): each connection authenticates (Lakegate verifies a token seen before) and starts a session.
pgbench_rounds sql-pgbench-connect -S -C -c "$CLIENTS" -j "$CLIENTS" >"$WORK/rounds-connect"
# One line a protocol: the medians (tps, then the proxy's CPU a query, its user part and PostgreSQL's, for direct,
# Lakegate and pgbouncer in turn) and the range of Lakegate's per-round ratio to pgbouncer.
medians() {
  python3 - "$1" <<'PY'
import statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    round_, target, *values = line.split()
    rounds.setdefault(target, {})[int(round_)] = values
def median(target, i):
    xs = [float(v[i]) for v in rounds[target].values() if v[i] not in ("-", "n/a")]
    return f"{statistics.median(xs):.{0 if i == 0 else 1}f}" if xs else "-"
ratios = sorted(float(rounds["lakegate"][r][0]) / float(rounds["bouncer"][r][0])
                for r in rounds["lakegate"] if float(rounds["bouncer"][r][0]) > 0)
out = [median(t, i) for t in ("direct", "lakegate", "bouncer") for i in range(4)]
print(*out, f"{ratios[0]:.2f}–{ratios[-1]:.2f}" if ratios else "n/a")
PY
}
read -r direct _ _ direct_cpu_pg lakegate lakegate_cpu_px lakegate_cpu_user lakegate_cpu_pg \
  bouncer bouncer_cpu_px bouncer_cpu_user bouncer_cpu_pg simple_ratios <<<"$(medians "$WORK/rounds-simple")"
read -r direct_ext _ _ direct_ext_cpu_pg lakegate_ext lakegate_ext_cpu_px lakegate_ext_cpu_user lakegate_ext_cpu_pg \
  bouncer_ext bouncer_ext_cpu_px bouncer_ext_cpu_user bouncer_ext_cpu_pg extended_ratios <<<"$(medians "$WORK/rounds-extended")"
read -r direct_conn _ _ direct_conn_cpu_pg lakegate_conn lakegate_conn_cpu_px lakegate_conn_cpu_user lakegate_conn_cpu_pg \
  bouncer_conn bouncer_conn_cpu_px bouncer_conn_cpu_user bouncer_conn_cpu_pg connect_ratios <<<"$(medians "$WORK/rounds-connect")"

echo 'SELECT count(*), sum(abalance) FROM pgbench_accounts;' > "$WORK/agg.sql"
# Alternated rounds, the order swapped every round: a single run per side could not tell 1.05x from 1.15x on
# this machine (the reference itself moves by a fifth between runs). Reported: the median latency of each side and
# the range of the per-round ratios.
agg_lg() { DURATION=$AGG_SECONDS run_pgbench "$LG_SQL" filtered "$FILTERED_TOKEN" -f "$WORK/agg.sql" -c 1 | latency; }
agg_rls() { DURATION=$AGG_SECONDS run_pgbench "$PG_PORT" rls_reader "" -f "$WORK/agg.sql" -c 1 | latency; }
agg_lg_runs=""; agg_rls_runs=""
for round in $(seq "$AGG_ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    lg=$(agg_lg); rls=$(agg_rls)
  else
    rls=$(agg_rls); lg=$(agg_lg)
  fi
  agg_lg_runs="$agg_lg_runs $lg"; agg_rls_runs="$agg_rls_runs $rls"
done
read -r agg_lakegate agg_rls agg_ratio agg_ratios <<<"$(python3 - "$agg_lg_runs" "$agg_rls_runs" <<'PY'
import statistics, sys
lg, rls = ([float(x) for x in a.split()] for a in sys.argv[1:3])
ratios = sorted(a / b for a, b in zip(lg, rls))
print(f"{statistics.median(lg):.3f} {statistics.median(rls):.3f} "
      f"{statistics.median(lg) / statistics.median(rls):.2f} {ratios[0]:.2f}–{ratios[-1]:.2f}")
PY
)"
# Both must see the same rows, or the comparison means nothing.
check_lg=$(PGPASSWORD=$FILTERED_TOKEN "$PGBIN/psql" -X -A -t -h 127.0.0.1 -p "$LG_SQL" -U filtered -d postgres -c "$(cat "$WORK/agg.sql")")
check_rls=$($PGBIN/psql -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U rls_reader -d postgres -c "$(cat "$WORK/agg.sql")")
[ "$check_lg" = "$check_rls" ] || { echo "aggregate results differ: $check_lg vs $check_rls" >&2; exit 1; }

# A pool's ping, as SQLAlchemy's pool_pre_ping and HikariCP's test query send it before lending a connection: one
# client, one run a side. Through Lakegate it names no table, so the embedded engine answers it.
echo 'SELECT 1;' > "$WORK/ping.sql"
ping_latency() { DURATION=$AGG_SECONDS run_pgbench "$@" -f "$WORK/ping.sql" -c 1 | latency; }
ping_direct=$(ping_latency "$PG_PORT" postgres "")
ping_lakegate=$(ping_latency "$LG_SQL" bench "$BENCH_TOKEN")
ping_bouncer=$(ping_latency "$BOUNCER" postgres "")

# A tool's catalog query, sent again as DBeaver, DataGrip and JDBC's DatabaseMetaData send theirs while a user browses
# and refreshes: Lakegate answers it from the principal's governed view, PostgreSQL from its own catalog (the same
# two tables here). One client, one run a side, with each protocol.
echo "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname IN ('pgbench_accounts', 'pgbench_branches') ORDER BY 1;" > "$WORK/catalog.sql"
catalog_latency() { DURATION=$AGG_SECONDS run_pgbench "$@" -f "$WORK/catalog.sql" -c 1 | latency; }
catalog_direct=$(catalog_latency "$PG_PORT" postgres "")
catalog_lakegate=$(catalog_latency "$LG_SQL" bench "$BENCH_TOKEN")
catalog_direct_ext=$(catalog_latency "$PG_PORT" postgres "" -M extended)
catalog_lakegate_ext=$(catalog_latency "$LG_SQL" bench "$BENCH_TOKEN" -M extended)
catalog_shown=$(PGPASSWORD=$BENCH_TOKEN "$PGBIN/psql" -X -A -t -h 127.0.0.1 -p "$LG_SQL" -U bench -d postgres -f "$WORK/catalog.sql" | tr '\n' ' ')
catalog_pg=$($PGBIN/psql -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -f "$WORK/catalog.sql" | tr '\n' ' ')
[ "$catalog_shown" = "$catalog_pg" ] || { echo "catalog listings differ: $catalog_shown vs $catalog_pg" >&2; exit 1; }

ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
sum_ratio() { awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" 'BEGIN { if (c + d > 0 && a + b > 0) printf "%.2f", (a + b) / (c + d); else print "n/a" }'; }
cat <<MD
| measurement (pgbench: $CLIENTS clients, scale $SCALE, median of $PGBENCH_ROUNDS alternated ${DURATION}s runs a side) | result | ratio |
|---|---|---|
| pgbench -S directly on PostgreSQL | $direct tps | 1.00 |
| pgbench -S through Lakegate (PostgreSQL backend) | $lakegate tps | $(ratio "$lakegate" "$direct") of direct, $(ratio "$lakegate" "$bouncer") of pgbouncer (per round $simple_ratios) |
| pgbench -S through pgbouncer (transaction pooling) | $bouncer tps | $(ratio "$bouncer" "$direct") of direct |
| pgbench -S -M extended directly on PostgreSQL | $direct_ext tps | 1.00 |
| pgbench -S -M extended through Lakegate | $lakegate_ext tps | $(ratio "$lakegate_ext" "$direct_ext") of direct, $(ratio "$lakegate_ext" "$bouncer_ext") of pgbouncer (per round $extended_ratios) |
| pgbench -S -M extended through pgbouncer | $bouncer_ext tps | $(ratio "$bouncer_ext" "$direct_ext") of direct |
| pgbench -S -C (a connection for each transaction) directly on PostgreSQL | $direct_conn tps | 1.00 |
| pgbench -S -C through Lakegate | $lakegate_conn tps | $(ratio "$lakegate_conn" "$direct_conn") of direct, $(ratio "$lakegate_conn" "$bouncer_conn") of pgbouncer (per round $connect_ratios) |
| pgbench -S -C through pgbouncer | $bouncer_conn tps | $(ratio "$bouncer_conn" "$direct_conn") of direct |
| \`count(*), sum(abalance)\` with row filter \`bid = 1\`, through Lakegate (median of $AGG_ROUNDS alternated ${AGG_SECONDS}s runs, 1 client) | $agg_lakegate ms | $agg_ratio x native RLS (per round $agg_ratios) |
| the same aggregate under native RLS (\`USING (bid = 1)\`) | $agg_rls ms | 1.00 |
| \`SELECT 1\` (a pool's ping) directly on PostgreSQL (1 client, ${AGG_SECONDS}s) | $ping_direct ms | 1.00 |
| \`SELECT 1\` through Lakegate | $ping_lakegate ms | $(ratio "$ping_lakegate" "$ping_direct") x direct, $(ratio "$ping_lakegate" "$ping_bouncer") x pgbouncer |
| \`SELECT 1\` through pgbouncer | $ping_bouncer ms | $(ratio "$ping_bouncer" "$ping_direct") x direct |
| a catalog listing (\`pg_class\` ⨝ \`pg_namespace\`, sent again) directly on PostgreSQL (1 client, ${AGG_SECONDS}s) | $catalog_direct ms | 1.00 |
| the same through Lakegate (the governed view) | $catalog_lakegate ms | $(ratio "$catalog_lakegate" "$catalog_direct") x direct |
| the catalog listing, -M extended, directly on PostgreSQL | $catalog_direct_ext ms | 1.00 |
| the same through Lakegate | $catalog_lakegate_ext ms | $(ratio "$catalog_lakegate_ext" "$catalog_direct_ext") x direct |
MD
cat <<MD

CPU per pgbench -S query, µs (user + system time from \`/proc/<pid>/stat\` over ${CPU_FOR}s inside each run, divided
by the queries of that span, the median of the rounds; the proxy's user-space part in brackets, the rest is the
kernel's; PostgreSQL counts its postmaster and every backend; pgbench's own CPU is not counted):

| protocol | directly: PostgreSQL | through Lakegate: Lakegate (user) / PostgreSQL | through pgbouncer: pgbouncer (user) / PostgreSQL | both sides, pgbouncer's over Lakegate's |
|---|---|---|---|---|
| simple | $direct_cpu_pg | $lakegate_cpu_px ($lakegate_cpu_user) / $lakegate_cpu_pg | $bouncer_cpu_px ($bouncer_cpu_user) / $bouncer_cpu_pg | $(sum_ratio "$bouncer_cpu_px" "$bouncer_cpu_pg" "$lakegate_cpu_px" "$lakegate_cpu_pg") |
| extended | $direct_ext_cpu_pg | $lakegate_ext_cpu_px ($lakegate_ext_cpu_user) / $lakegate_ext_cpu_pg | $bouncer_ext_cpu_px ($bouncer_ext_cpu_user) / $bouncer_ext_cpu_pg | $(sum_ratio "$bouncer_ext_cpu_px" "$bouncer_ext_cpu_pg" "$lakegate_ext_cpu_px" "$lakegate_ext_cpu_pg") |
| simple, a connection for each query (\`-C\`) | $direct_conn_cpu_pg | $lakegate_conn_cpu_px ($lakegate_conn_cpu_user) / $lakegate_conn_cpu_pg | $bouncer_conn_cpu_px ($bouncer_conn_cpu_user) / $bouncer_conn_cpu_pg | $(sum_ratio "$bouncer_conn_cpu_px" "$bouncer_conn_cpu_pg" "$lakegate_conn_cpu_px" "$lakegate_conn_cpu_pg") |
MD

[ -n "${SKIP_CRITERION:-}" ] && exit 0
echo
echo "rewrite time per query (criterion, median):"
cargo bench --quiet -p lakegate-sql --bench rewrite -- --warm-up-time 1 --measurement-time 3 2>/dev/null \
  | grep -E '^(rewrite/|compile_)|time:' | paste - - | sed 's/ \+/ /g'
