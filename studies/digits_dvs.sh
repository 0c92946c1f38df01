#!/usr/bin/env bash
# Study 3 (docs/results.md): digits-dvs, vgg_snn_small at T=10, mean CE against TKS (temperature 5, alpha 0.3),
# three seeds, each evaluated at T = 1..10 with the first t frames (truncate) and with the events re-binned
# into t frames (rebin). Rerunning skips the runs that finished.
# Usage: studies/digits_dvs.sh [SEED ...]      (default seeds: 0 1 2)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-results/digits-dvs}
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  for method in ce tks; do
    name="dvs-$method-s$seed"
    run_one "$name" "configs/studies/dvs_$method.yaml" \
      "--steps 1 2 3 4 5 6 7 8 9 10 --event-steps truncate --early-exit" --set run.seed="$seed"
    run=$(ls -d "$OUT"/"$name"-* | tail -n 1)
    if ! grep -q '"steps_rebin"' "$run/metrics.json"; then
      $TKS eval "$run/checkpoint.pt" --steps 1 2 3 4 5 6 7 8 9 10 --event-steps rebin
      if [ "$COMMIT" = 1 ]; then git commit -q -m "Study result: $name, re-binned" -- "$run" || true; fi
    fi
  done
done
