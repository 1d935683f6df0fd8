#!/bin/bash
# The same incidents under threadtrace and under the tools people reach for
# today: BCC's oomkill and threadsnoop, bpftrace's oomkill.bt and
# threadsnoop.bt. Run in a guest by `cargo xtask vm --anchors`; every
# tracer's output lands in $OUT, one file per tool, and workloads.log says
# when each incident ran. $OUT/RELEASE/ per guest kernel.
#
#   (a) an OpenMP program as nobody under `ulimit -u 6`
#   (b) the same program as root in a cgroup with pids.max 4
#   (c) python3 growing in a cgroup with memory.max 200M (an OOM kill)
#   (d) memory.oom.group: python3 growing beside two sleeps in one cgroup
#
# All tracers start once: BCC compiles for minutes under emulation.
set -m                       # each tracer in its own process group
export PYTHONUNBUFFERED=1    # BCC's tools print through python
: "${OUT:?set OUT to a directory the results go to}" "${THREADTRACE_BIN:?}"
OUT=$OUT/$(uname -r); mkdir -p "$OUT"
TT=$THREADTRACE_BIN
SRC=$(cd "$(dirname "$0")/.." && pwd)/programs/omp_threads.c
OMP=$TMPDIR/omp
gcc -O1 -fopenmp -o "$OMP" "$SRC" && chmod 755 "$OMP" || exit 1
WL=$OUT/workloads.log; : > "$WL"
log() { echo "[$(date -u +%T.%3N)] $*" | tee -a "$WL"; }
wait_for() { # FILE REGEX SECONDS
  local i; for ((i = 0; i < $3; i++)); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 1; done
  log "gave up waiting for /$2/ in $1"; return 1
}
stop() {
  local p i
  for p in "$@"; do kill -INT -- -"$p" 2>/dev/null; done
  for p in "$@"; do
    for i in $(seq 120); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- -"$p" 2>/dev/null
  done
  wait
}
grow() { # MiB per step: python3 holding ever more memory
  exec python3 -c "
import time
held = []
while True:
    held.append(b'x' * ($1 << 20)); time.sleep(0.05)"
}

log "starting the tracers"
P=()
oomkill-bpfcc > "$OUT/oomkill-bpfcc.txt" 2>&1 & P+=($!)
threadsnoop-bpfcc > "$OUT/threadsnoop-bpfcc.txt" 2>&1 & P+=($!)
bpftrace /usr/sbin/oomkill.bt > "$OUT/oomkill.bt.txt" 2>&1 & P+=($!)
bpftrace /usr/sbin/threadsnoop.bt > "$OUT/threadsnoop.bt.txt" 2>&1 & P+=($!)
"$TT" record --json > "$OUT/threadtrace.jsonl" 2> "$OUT/threadtrace.stderr" & P+=($!)
wait_for "$OUT/threadtrace.jsonl" '"started"' 600 && log "threadtrace ready"
wait_for "$OUT/oomkill.bt.txt" 'Tracing|ERROR' 600 && log "oomkill.bt ready"
wait_for "$OUT/threadsnoop.bt.txt" 'TIME|ERROR' 600 && log "threadsnoop.bt ready"
wait_for "$OUT/oomkill-bpfcc.txt" 'Tracing|rror' 1500 && log "oomkill-bpfcc ready"
wait_for "$OUT/threadsnoop-bpfcc.txt" 'TIME|rror' 1500 && log "threadsnoop-bpfcc ready"
sleep 3

log "(a) OpenMP as nobody, ulimit -u 6, OMP_NUM_THREADS=8"
runuser -u nobody -- bash -c "ulimit -u 6; OMP_NUM_THREADS=8 $OMP; echo exit=\$?" > "$OUT/a.txt" 2>&1
sleep 3

CG=/sys/fs/cgroup/anchor-pids; mkdir -p $CG; echo 4 > $CG/pids.max
log "(b) OpenMP as root in $CG, pids.max 4"
bash -c "echo \$\$ > $CG/cgroup.procs; OMP_NUM_THREADS=8 exec $OMP" > "$OUT/b.txt" 2>&1
echo "exit=$? pids.events: $(cat $CG/pids.events)" >> "$OUT/b.txt"
sleep 3; rmdir $CG

CG=/sys/fs/cgroup/anchor-mem; mkdir -p $CG; echo 200M > $CG/memory.max; echo 0 > $CG/memory.swap.max
log "(c) python3 growing 10 MiB every 50 ms in $CG, memory.max 200M"
bash -c "echo \$\$ > $CG/cgroup.procs; $(declare -f grow); grow 10" > "$OUT/c.txt" 2>&1
echo "exit=$? memory.events: $(tr '\n' ' ' < $CG/memory.events)" >> "$OUT/c.txt"
sleep 3; rmdir $CG

CG=/sys/fs/cgroup/anchor-oomgroup; mkdir -p $CG
echo 100M > $CG/memory.max; echo 0 > $CG/memory.swap.max; echo 1 > $CG/memory.oom.group
log "(d) python3 growing 5 MiB every 50 ms beside two sleeps in $CG, memory.oom.group 1"
bash -c "echo \$\$ > $CG/cgroup.procs; exec sleep 600" & S1=$!
bash -c "echo \$\$ > $CG/cgroup.procs; exec sleep 600" & S2=$!
sleep 1
bash -c "echo \$\$ > $CG/cgroup.procs; $(declare -f grow); grow 5" > "$OUT/d.txt" 2>&1 & PY=$!
wait $PY; echo "python3[$PY] exit=$?" >> "$OUT/d.txt"
for s in $S1 $S2; do
  for i in $(seq 40); do kill -0 $s 2>/dev/null || break; sleep 0.25; done
  kill $s 2>/dev/null; wait $s; echo "sleep[$s] exit=$?" >> "$OUT/d.txt"
done
echo "memory.events: $(tr '\n' ' ' < $CG/memory.events)" >> "$OUT/d.txt"
sleep 3; rmdir $CG

log "stopping the tracers"
stop "${P[@]}"
dmesg | grep -iE 'oom|killed process' > "$OUT/dmesg-oom.txt"
log done
