"""`robustmsa.analysis` as a notebook imports it."""

from __future__ import annotations


def test_importing_it_loads_neither_torch_nor_ray():
    import subprocess
    import sys

    probe = "import sys, robustmsa.analysis; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
