# Sourced by the benchmark scripts (not run on its own). With BENCH_PROFILE=DIR set, a load phase can be profiled:
#
#   profile_start NAME PID SECONDS   # before the load: perf samples PID's on-CPU stacks for SECONDS, at 499 Hz
#   profile_finish NAME              # after it: DIR/NAME.svg (flame graph), DIR/NAME.txt (the hottest frames)
#                                    # and DIR/NAME.folded (the stacks, for a closer look: grep a frame)
#
# Without BENCH_PROFILE both do nothing, so a benchmark run measures without the profiler's cost. Stacks are
# unwound from DWARF (release builds keep line tables, not frame pointers). Needs perf (Debian's linux-perf) and
# inferno's collapse-perf and flamegraph (`cargo install inferno`), checked at the first profile_start.
# The caller sets WORK (a scratch directory).

profile_start() { # name pid seconds
  [ -n "${BENCH_PROFILE:-}" ] || return 0
  command -v perf >/dev/null || { echo "BENCH_PROFILE needs perf (Debian: linux-perf)" >&2; exit 2; }
  command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null ||
    { echo "BENCH_PROFILE needs inferno: cargo install inferno" >&2; exit 2; }
  mkdir -p "$BENCH_PROFILE"
  # cpu-clock: a virtual machine may have no hardware counters.
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$2" -o "$WORK/$1.perf" -- sleep "$3" \
    >"$WORK/$1.perf.log" 2>&1 &
  PROFILER_PID=$!
}

profile_finish() { # name
  [ -n "${BENCH_PROFILE:-}" ] || return 0
  wait "$PROFILER_PID" || { echo "perf record failed: $(tail -3 "$WORK/$1.perf.log")" >&2; return 1; }
  perf script -i "$WORK/$1.perf" 2>/dev/null | inferno-collapse-perf >"$BENCH_PROFILE/$1.folded"
  inferno-flamegraph --title "$1" <"$BENCH_PROFILE/$1.folded" >"$BENCH_PROFILE/$1.svg"
  # The hottest frames by their own samples (self time), then by the samples under them (total time).
  {
    echo "# $1: share of on-CPU samples (perf cpu-clock at 499 Hz), by frame"
    echo "## self"
    awk '{n = $NF; $NF = ""; k = split($0, f, ";"); gsub(/ +$/, "", f[k]); self[f[k]] += n; t += n}
         END {for (x in self) printf "%6.2f%%  %s\n", 100 * self[x] / t, x}' "$BENCH_PROFILE/$1.folded" | sort -rn | awk 'NR <= 40'
    echo "## total"
    awk '{n = $NF; $NF = ""; k = split($0, f, ";"); delete seen
          for (i = 1; i <= k; i++) { g = f[i]; gsub(/ +$/, "", g); if (!(g in seen)) { seen[g] = 1; tot[g] += n } }
          t += n}
         END {for (x in tot) printf "%6.2f%%  %s\n", 100 * tot[x] / t, x}' "$BENCH_PROFILE/$1.folded" | sort -rn | awk 'NR <= 60'
  } >"$BENCH_PROFILE/$1.txt"
  echo "profile: $BENCH_PROFILE/$1.svg" >&2
}
