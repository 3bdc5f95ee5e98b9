#!/usr/bin/env bash
# Wall time of the README's two commands on a fresh clone of this repository's HEAD:
# `make study` (including the venv install it triggers) and then `make test`.
#   bash benchmarks/fresh_clone.sh [--smoke]      (--smoke: `make study STUDY_ARGS=--smoke-test`)
# Writes benchmarks/results/fresh_clone.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && git rev-parse --show-toplevel)"
work="$(mktemp -d /tmp/robustmsa-clone-XXXXXX)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/robustmsa"
cd "$work/robustmsa"
study_args=""
[ "${1:-}" = "--smoke" ] && study_args="--smoke-test"
export RAY_AUTH_MODE=disabled
t0=$(date +%s)
make study STUDY_ARGS="$study_args" > "$work/study.log" 2>&1
t1=$(date +%s)
make test > "$work/test.log" 2>&1
t2=$(date +%s)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD)  cpus: $(nproc)"
  echo "make study ${study_args} (fresh clone, includes install): $((t1 - t0)) s"
  echo "make test (venv already installed by make study): $((t2 - t1)) s"
  echo "--- make study summary"
  grep -A 20 "^Study finished" "$work/study.log" || true
  echo "--- make test summary"
  tail -n 3 "$work/test.log"
} | tee "$here/results/fresh_clone.txt"
