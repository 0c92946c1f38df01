#!/usr/bin/env bash
# Study 1 and 2 (docs/results.md): Fashion-MNIST, spiking_lenet at T=4, five methods x three seeds.
# Every run is then evaluated at T = 1..4 (Fig. 3) with its step accuracies (Fig. 4); the seed-0 runs also give
# features (Fig. 5), the early-exit curve and their activity. Rerunning skips the runs that finished.
# Usage: studies/fashion_mnist.sh [SEED ...]      (default seeds: 0 1 2)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-results/fashion-mnist}
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  eval_args="--steps 1 2 3 4"
  [ "$seed" != 0 ] || eval_args="$eval_args --features --early-exit --activity"
  for method in ce ls tet tks tks_paper; do
    run_one "fmnist-${method//_/-}-s$seed" "configs/studies/fmnist_$method.yaml" \
      "$eval_args" --set run.seed="$seed"
  done
done
