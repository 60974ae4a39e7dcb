# Sourced by the benchmark scripts (not run on its own): the CPU a set of processes used, for figures per request
# or per query. On a machine whose throughput moves between runs, the CPU each side spends per request moves
# less, and it does not depend on how much of the machine the load tool left to the side measured.
#
#   cpu_ticks PID...       # user + system time of the processes (all their threads) so far, in clock ticks
#   cpu_user_ticks PID...  # their user time alone (the rest of cpu_ticks is the kernel's work for them)
#   with_children PID      # PID and its children (nginx's master and workers, PostgreSQL's postmaster and backends)
#   per_op TICKS OPS       # microseconds of CPU per operation, one decimal ("n/a" without operations)
#
# A process gone since it was named counts nothing: measure across a window in which the measured processes live
# (PostgreSQL's backends of a pgbench run end with it, so sample inside the run).

cpu_ticks() { stat_ticks '$12 + $13' "$@"; }
cpu_user_ticks() { stat_ticks '$12' "$@"; }

stat_ticks() { # awk-expression PID...
  local expr=$1 total=0 pid ticks
  shift
  for pid in "$@"; do
    # The fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    ticks=$(awk "{ sub(/^.*\\) /, \"\"); print $expr }" "/proc/$pid/stat" 2>/dev/null) || ticks=0
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

with_children() {
  echo "$1" $(pgrep -P "$1" || true)
}

CPU_TICK_HZ=$(getconf CLK_TCK)
per_op() {
  awk -v t="$1" -v n="$2" -v hz="$CPU_TICK_HZ" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'
}
