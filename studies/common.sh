# Shared by the study scripts: train one configuration, evaluate it, and commit its run folder.
#
# Environment (all optional):
#   OUT      parent folder of the run folders (default: results/<study>)
#   EXTRA    extra "--set key=value" arguments for every run (the CI test shortens the runs with it)
#   COMMIT   1 (default): commit each finished run folder to git, so partial results survive an interruption
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TKS=${TKS:-tks}
COMMIT=${COMMIT:-1}
EXTRA=${EXTRA:-}

# run_one NAME CONFIG EVAL_ARGS [SET_ARGS...]: skipped when a finished run NAME-* already exists in $OUT.
run_one() {
  local name=$1 config=$2 eval_args=$3
  shift 3
  if compgen -G "$OUT/$name-*/metrics.json" >/dev/null && grep -q '"eval"' "$OUT"/"$name"-*/metrics.json; then
    echo "== $name: done already"
    return
  fi
  rm -rf "$OUT"/"$name"-*  # an unfinished earlier attempt
  echo "== $name: training ($(date +%H:%M:%S))"
  # shellcheck disable=SC2086
  $TKS train "$config" --set run.out_dir="$OUT" --set run.name="$name" "$@" $EXTRA
  local run
  run=$(ls -d "$OUT"/"$name"-* | tail -n 1)
  # shellcheck disable=SC2086
  $TKS eval "$run/checkpoint.pt" $eval_args
  if [ "$COMMIT" = 1 ]; then
    for _ in 1 2 3 4 5; do  # another git command may hold the index lock for a moment
      if git add -- "$run" && git commit -q -m "Study result: $name" -- "$run"; then break; fi
      sleep 5
    done
  fi
}
