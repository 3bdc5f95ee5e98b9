#!/usr/bin/env bash
# Wall time of the README's two commands on a fresh clone of this repository's HEAD:
# `make study` (including the venv install it triggers) and then `make test`.
#   bash benchmarks/fresh_clone.sh [--smoke]      (--smoke: `make study STUDY_ARGS=--smoke-test`)
# Writes benchmarks/results/fresh_clone.txt; the full logs stay in a /tmp folder it names, also
# when a command fails. The clone sits in /tmp, outside the workspace: no ../shared, so the
# shared-data tests skip (the MOSI preset's labels are packaged, data/mosi_labels.py: the same
# dataset as in the workspace).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && git rev-parse --show-toplevel)"
work="$(mktemp -d /tmp/robustmsa-clone-XXXXXX)"
logs="$(mktemp -d /tmp/robustmsa-clone-logs-XXXXXX)"
echo "logs: $logs"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/robustmsa"
cd "$work/robustmsa"
study_args=""
[ "${1:-}" = "--smoke" ] && study_args="--smoke-test"
export RAY_AUTH_MODE=disabled
t0=$(date +%s)
study_rc=0
make study STUDY_ARGS="$study_args" > "$logs/study.log" 2>&1 || study_rc=$?
t1=$(date +%s)
test_rc=0
make test > "$logs/test.log" 2>&1 || test_rc=$?
t2=$(date +%s)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD)  cpus: $(nproc)"
  echo "make study ${study_args} (fresh clone, includes install): $((t1 - t0)) s, exit $study_rc"
  echo "make test (venv already installed by make study): $((t2 - t1)) s, exit $test_rc"
  echo "--- make study summary"
  grep -A 20 "^Study finished" "$logs/study.log" || true
  echo "--- make test summary"
  grep -E "^(FAILED|ERROR) " "$logs/test.log" || true
  tail -n 3 "$logs/test.log"
} | tee "$here/results/fresh_clone.txt"
[ "$study_rc" -eq 0 ] && [ "$test_rc" -eq 0 ]
