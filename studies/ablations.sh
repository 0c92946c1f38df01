#!/usr/bin/env bash
# Study 4 (docs/results.md): TKS's choices on Fashion-MNIST, one seed, against fmnist-tks-s0 of study 1
# (sum teacher, not detached, alpha 0.7, temperature 3): each run changes one of them.
# Usage: studies/ablations.sh
source "$(dirname "$0")/common.sh"
OUT=${OUT:-results/ablations}
EVAL="--steps 1 2 3 4"
# First, beyond the issue: the full TKS weight from epoch 0 (the official ramp gives 3-epoch runs little of it).
run_one abl-schedule-constant configs/studies/fmnist_tks.yaml "$EVAL" --set loss.schedule=constant
run_one abl-detached configs/studies/fmnist_tks.yaml "$EVAL" --set loss.detach_teacher=true
run_one abl-teacher-mean configs/studies/fmnist_tks.yaml "$EVAL" --set loss.teacher=mean
run_one abl-alpha-1.0 configs/studies/fmnist_tks.yaml "$EVAL" --set loss.alpha=1.0
run_one abl-alpha-0.3 configs/studies/fmnist_tks.yaml "$EVAL" --set loss.alpha=0.3
run_one abl-temperature-1 configs/studies/fmnist_tks.yaml "$EVAL" --set loss.temperature=1.0
run_one abl-temperature-5 configs/studies/fmnist_tks.yaml "$EVAL" --set loss.temperature=5.0
