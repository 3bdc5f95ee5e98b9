#!/usr/bin/env bash
# Installs robustmsa's declared dependencies on a Ray node: the `[project].dependencies` of
# pyproject.toml, pinned by constraints.txt, into the node's Python (the stock Ray image's
# /home/ray/anaconda3). The robustmsa package itself is NOT installed: it ships with each job
# (`ray job submit --working-dir .`, or a RayJob's working_dir URI), so no node runs a stale copy.
#
#   bash cluster/install_node.sh cpu|gpu [PROJECT_DIR]
#
# PROJECT_DIR holds pyproject.toml and constraints.txt (default: the folder above this script).
#   cpu: torch (pinned in constraints.txt, 2.13.0) from the CPU wheel index, no CUDA libraries;
#   gpu: the same torch version, CUDA build from PyPI (TORCH_INDEX_URL=... picks another index,
#        e.g. https://download.pytorch.org/whl/cu128).
# PYTHON=... names the interpreter (default: python on PATH). Used by cluster/aws.yaml,
# cluster/gcp.yaml (setup commands) and cluster/Dockerfile (the KubeRay image).
set -euo pipefail

kind="${1:-}"
case "$kind" in
  cpu | gpu) ;;
  *) echo "usage: install_node.sh cpu|gpu [PROJECT_DIR]" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="${2:-$here/..}"
python="${PYTHON:-python}"
pyproject="$project/pyproject.toml"
constraints="$project/constraints.txt"
for f in "$pyproject" "$constraints"; do
  [ -f "$f" ] || { echo "install_node.sh: $f not found" >&2; exit 2; }
done

torch_pin="$(grep -E '^torch==' "$constraints" | head -n 1 | awk '{print $1}')"
[ -n "$torch_pin" ] || { echo "install_node.sh: no torch== pin in $constraints" >&2; exit 2; }
ray_pin="$(grep -E '^ray==' "$constraints" | head -n 1 | awk '{print $1}')"

# The declared dependencies, read from pyproject.toml (tomllib: Python 3.11+; tomli before).
"$python" -c 'import tomllib' 2>/dev/null || "$python" -m pip install --progress-bar off 'tomli>=2'
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
"$python" - "$pyproject" >"$requirements" <<'EOF'
import sys

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF

pip=("$python" -m pip install --progress-bar off --no-cache-dir)
# torch first, from the index of this node's kind: the constrained install below then finds the
# pin already satisfied and never resolves a bare `torch` (a multi-GB CUDA build on CPU nodes).
if [ "$kind" = cpu ]; then
  "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu "$torch_pin"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$torch_pin"
else
  "${pip[@]}" "$torch_pin"
fi
"${pip[@]}" -c "$constraints" -r "$requirements"

# The node must end up with the pinned versions and the torch build of its kind.
"$python" - "$kind" "$torch_pin" "$ray_pin" <<'EOF'
import sys

import ray
import torch

kind, torch_pin, ray_pin = sys.argv[1:4]
problems = []
if torch.__version__.split("+")[0] != torch_pin.split("==")[1]:
    problems.append(f"torch {torch.__version__}, pinned {torch_pin}")
if ray_pin and ray.__version__ != ray_pin.split("==")[1]:
    problems.append(f"ray {ray.__version__}, pinned {ray_pin} (use the matching Ray image)")
if kind == "cpu" and torch.version.cuda:
    problems.append(f"a CUDA torch build ({torch.__version__}) on a CPU node")
if kind == "gpu" and not torch.version.cuda:
    problems.append(f"a CPU-only torch build ({torch.__version__}) on a GPU node")
if problems:
    sys.exit("install_node.sh: " + "; ".join(problems))
print(f"robustmsa node ({kind}): torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"ray {ray.__version__}")
EOF
