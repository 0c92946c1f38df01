#!/usr/bin/env bash
# Every study of docs/results.md, ordered so that early results cover every method: seed 0 of study 1, study 3,
# seeds 1-2 of study 1, then the ablations. About 2.5 hours on 2 CPU cores. Rerunning skips finished runs.
set -euo pipefail
cd "$(dirname "$0")"
./fashion_mnist.sh 0
./digits_dvs.sh 0 1 2
./fashion_mnist.sh 1 2
./ablations.sh
