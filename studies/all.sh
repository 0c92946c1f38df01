#!/usr/bin/env bash
# Every study of docs/results.md in two lanes that run side by side, one thread each: on 2 cores two one-thread
# trainings of these small networks get through 1.35x more samples than one two-thread training. Lane A: study 1
# seeds 0-1, then the ablations; lane B: study 1 seed 2, then study 3. About 4 hours of training time, so 2-2.5
# hours of wall time, on 2 CPU cores. Rerunning skips finished runs; the lanes never touch each other's run
# folders. Logs: $LOGS/lane-{a,b}.log (default /tmp).
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LOGS=${LOGS:-/tmp}
(./fashion_mnist.sh 0 1 && ./ablations.sh) > "$LOGS/lane-a.log" 2>&1 &
(./fashion_mnist.sh 2 && ./digits_dvs.sh 0 1 2) > "$LOGS/lane-b.log" 2>&1 &
wait -n && wait -n  # fail if either lane fails
