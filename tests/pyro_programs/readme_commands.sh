#!/usr/bin/env bash
# The README's "look at a trained run" commands as written (relative paths, from a fresh
# folder), with --epochs cut to 2. Prints one line per command: rc and the last output line.
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-python}"
WORK="$(mktemp -d)"
export XDG_CONFIG_HOME="$WORK/config" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK" || exit 1
echo "work folder: $WORK"
i=0
run() {
  i=$((i + 1))
  "$PY" -m ppl_vae "$@" >"log.$i" 2>&1
  echo "rc=$? | ppl-vae $* | $(grep -v '^\s*$' "log.$i" | tail -n 1 | cut -c1-250)"
}
run train vae --data digits --epochs 2 --seed 0 --out runs/vae --no-progress
run evaluate runs/vae --iwae-samples 5000
run analyze runs/vae
run analyze runs/vae
run sample runs/vae -n 64 --out samples.png
run report runs/vae
run train vae --out runs/vae --epochs 3 --resume --no-progress
run report runs/vae
run train m2-vae --labels 100 --epochs 2 --out runs/m2 --no-progress
run evaluate runs/m2 --iwae-samples 100
run analyze runs/m2
run sample runs/m2 -n 16 --out m2.png
cp -r "$ROOT/examples" examples
run train examples/tutorial_vae.py --epochs 2 --beta 4 --out runs/mine --no-progress
run evaluate runs/mine --iwae-samples 1000
run train vae --data digits --epochs 2 --out runs/vae --overwrite --no-progress
