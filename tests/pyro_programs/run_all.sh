#!/usr/bin/env bash
# Runs every conformance program through train, evaluate, sample, analyze and report with
# tiny settings, from a fresh temporary folder with relative paths (issue 22).
# Usage: tests/pyro_programs/run_all.sh [NAME ...]   (PY=python to use; default: python)
# Prints one line per command: NAME COMMAND rc=N | last line of its output.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PY:-python}"
WORK="$(mktemp -d)"
export XDG_CONFIG_HOME="$WORK/config" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK" || exit 1
cp -r "$HERE" programs
# ss_vae_m2.py imports utils.custom_mlp: installed here by putting its folder on the path
export PYTHONPATH="$PYTHONPATH:$WORK/programs"
"$PY" programs/make_data.py data >/dev/null || exit 1
echo "work folder: $WORK"

TINY="--epochs 2 --batch-size 50 --no-progress"
ANALYZE="--points 2 --draws 20 --nuts-points 1 --chains 1 --nuts-samples 20 --nuts-warmup 20"
declare -A ARGS=(
  [tutorial_vae]="programs/tutorial_vae.py --data data/mnist_small_x.npz --latent-dim 4 --hidden 64"
  [tutorial_vae_validated]="programs/tutorial_vae_validated.py --data data/mnist_small.npz --latent-dim 4 --hidden 64"
  [tutorial_vae_validated_dyn]="programs/tutorial_vae_validated.py --data data/mnist_small.npz --binarize dynamic --latent-dim 4 --hidden 64"
  [tutorial_vae_validated_thr]="programs/tutorial_vae_validated.py --data data/mnist_small.npz --binarize threshold --latent-dim 4 --hidden 64"
  [vae_comparison]="programs/vae_comparison.py --data data/mnist_small.npz"
  [ss_vae_m2]="programs/ss_vae_m2.py --data data/mnist_small_x.npz --binarize threshold --latent-dim 4 --hidden 64"
  [ss_vae_m2_labels]="programs/ss_vae_m2.py --data mnist-5k --labels 100 --binarize threshold --latent-dim 4 --hidden 64 --epochs 1"
  [cvae]="programs/cvae.py --data data/cvae.npz --latent-dim 4 --hidden 64"
  [cevae_x]="programs/cevae.py --data data/cevae_x.npz --latent-dim 2 --hidden 16"
  [cevae_xt]="programs/cevae.py --data data/cevae_xt.npz --latent-dim 2 --hidden 16"
  [prodlda]="programs/prodlda.py --data data/prodlda.npz --latent-dim 5 --hidden 32"
  [flow_prior]="programs/flow_prior.py --data data/mnist_small.npz --binarize threshold --latent-dim 4"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(tutorial_vae tutorial_vae_validated tutorial_vae_validated_dyn
  tutorial_vae_validated_thr vae_comparison ss_vae_m2 ss_vae_m2_labels cvae cevae_x cevae_xt
  prodlda flow_prior)

step() {  # NAME CMD ARGS...
  local name=$1 cmd=$2; shift 2
  "$PY" -m ppl_vae "${cmd%%-*}" "$@" >"logs/$name.$cmd.log" 2>&1
  local rc=$?
  echo "$name $cmd rc=$rc | $(grep -v '^\s*$' "logs/$name.$cmd.log" | tail -n 1 | cut -c1-300)"
}
mkdir -p logs
for name in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  step "$name" train ${ARGS[$name]} $TINY --out "runs/$name" || true
  [ -f "runs/$name/config.json" ] || continue
  step "$name" evaluate "runs/$name" --iwae-samples 10
  step "$name" sample "runs/$name" -n 4 --out "runs/$name.s.png"
  # shellcheck disable=SC2086
  # absolute path first (the program's own analysis), then relative as the README writes it,
  # then absolute again (does a failed relative analyze leave the run usable?)
  step "$name" analyze "$WORK/runs/$name" $ANALYZE
  # shellcheck disable=SC2086
  step "$name" analyze-rel "runs/$name" $ANALYZE
  # shellcheck disable=SC2086
  step "$name" analyze-again "$WORK/runs/$name" $ANALYZE
  step "$name" report "runs/$name"
done
