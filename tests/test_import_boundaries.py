"""docs/architecture.md §1: the science layers import neither ray nor mlflow.

Checked in a fresh interpreter (this test process may already hold both). Modules are imported
one after another and the heavy modules checked after each, so a failure names the first
module that pulled one in.
"""

from __future__ import annotations

import json
import subprocess
import sys

from paths import REPO

LIGHT_MODULES = [
    "robustmsa.data",
    "robustmsa.data.parquet",
    "robustmsa.data.synthetic",
    "robustmsa.spectrum",
    "robustmsa.models",
    "robustmsa.evaluation.metrics",
    "robustmsa.evaluation.spectrum",
    "robustmsa.evaluation.summaries",
]
FORBIDDEN = ["ray", "mlflow"]

SCRIPT = """
import importlib, json, sys
mods, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
report = {}
for name in mods:
    importlib.import_module(name)
    report[name] = sorted(f for f in forbidden if f in sys.modules)
print(json.dumps(report))
"""


def _import_report(modules: list[str], forbidden: list[str]) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(modules), json.dumps(forbidden)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_science_layers_do_not_import_ray_or_mlflow():
    # pyarrow is a sentinel that proves the probe sees imports: the Parquet reader needs it.
    report = _import_report(LIGHT_MODULES, [*FORBIDDEN, "pyarrow"])
    assert list(report) == LIGHT_MODULES
    assert "pyarrow" in report["robustmsa.data.parquet"]
    offenders = {m: [h for h in heavy if h in FORBIDDEN] for m, heavy in report.items()}
    offenders = {m: heavy for m, heavy in offenders.items() if heavy}
    assert offenders == {}, f"module(s) after whose import ray/mlflow were loaded: {offenders}"
