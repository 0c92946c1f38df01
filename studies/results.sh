#!/usr/bin/env bash
# The tables and figures of docs/results.md, from the run folders the sweeps of studies/*.yaml wrote (committed under
# results/), with the project's own commands: tks compare (Table 4 layout, accuracy at each test T, accuracy of each
# step) and tks plot (Fig. 3, 4, 5 and the training curves). Reads run files only; a few minutes on 2 cores (t-SNE).
# Usage: studies/results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TKS=${TKS:-tks}
DOCS=docs/results
for study in fashion-mnist digits-dvs; do
  [ -d "results/$study" ] || continue
  $TKS compare "results/$study" --out "$DOCS/$study"
  $TKS plot "results/$study" --out "$DOCS/$study"
done
if [ -d results/ablations ]; then
  # Each ablation changes one choice of the study-1 TKS run of seed 0, which is the reference row.
  $TKS compare results/ablations results/fashion-mnist/fmnist-tks-s0-* --out "$DOCS/ablations"
fi
if [ -d results/convergence ]; then
  # Study 5 (issue 14): the final models, then the best.pt ones chosen on the validation split; TKS paired with each.
  $TKS compare results/convergence --paired TKS --out "$DOCS/convergence"
  $TKS compare results/convergence --paired TKS --model selected --out "$DOCS/convergence/selected"
  $TKS plot results/convergence --out "$DOCS/convergence"
fi
if [ -d results/anytime-dvs ]; then
  # Study 6 (issue 29): the early-exit study of each run's anytime.json (written by tks calibrate --study, which
  # needs the checkpoints; this line reads the committed JSON only).
  $TKS compare results/anytime-dvs --anytime --paired Baseline --out "$DOCS/anytime-dvs"
fi
if [ -d results/convergence-anytime ]; then
  # Study 6 on Fashion-MNIST: study 5's runs trained again with their checkpoints (see its README).
  $TKS compare results/convergence-anytime --anytime --paired Baseline --out "$DOCS/anytime-fmnist"
fi
