"""What the `temporal` synthetic preset asks of a model, measured with its exact Bayes oracles.

For the MOSI-shaped presets ``mosi`` and ``temporal`` (dataset seed 0), on the validation and
test splits, at the model comparison study's protocols (``clean, missing@all, noise@all,
patterns``, evaluation seed 0):

- ``constant``: the clean MAE of the training split's median (the floor);
- ``oracle``: the exact Bayes oracle (`robustmsa.data.oracle.Oracle`), every frame seen;
- ``pooled``: the oracle that sees each modality only through the mean of its valid frames
  (``Oracle(pooled=True)``): the best a model that averages frames first can do;

each as the spectrum score (`robustmsa.evaluation.summaries.spectrum_score`) and the MAE at
the clean point and at the availability patterns ``text`` (text alone) and ``audio+vision``.
``pooled - oracle`` is what finding the window is worth; ``text - clean`` what fusion is
worth. Seconds on 2 cores (generation included).

    .venv/bin/python benchmarks/temporal_preset.py

Results go to benchmarks/results/temporal_preset.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOCOLS = ["clean", "missing@all", "noise@all", "patterns"]
POINTS = {
    "clean": ("clean", "all"),
    "text": ("patterns", "text"),
    "no_text": ("patterns", "audio+vision"),
}


def _measure(root: Path, splits: dict, split_name: str) -> dict:
    import torch
    from robustmsa.data.oracle import Oracle
    from robustmsa.evaluation.ceiling import OracleModel
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.evaluation.summaries import spectrum_score
    from robustmsa.spectrum import build_points

    split = splits[split_name]
    median = float(torch.median(splits["train"].labels))
    out = {"constant": round(float((split.labels - median).abs().mean()), 4)}
    evaluator = SpectrumEvaluator(split, build_points(PROTOCOLS), seed=0)
    for name, pooled in (("oracle", False), ("pooled", True)):
        rows = evaluator.evaluate(OracleModel(Oracle.load(root, pooled=pooled)))
        mae = {(r["protocol"], r["modalities"]): r["value"] for r in rows if r["metric"] == "mae"}
        out[name] = {"spectrum_score": round(spectrum_score(rows), 4)}
        out[name].update({k: round(mae[p], 4) for k, p in POINTS.items()})
    return out


def main() -> None:
    import torch
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate

    torch.set_num_threads(1)
    record = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "protocols": PROTOCOLS}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("mosi", "temporal"):
            root = generate(preset, Path(tmp) / preset, seed=0)
            splits = open_dataset(root)  # opened once: the frame cache is built here
            record[preset] = {s: _measure(root, splits, s) for s in ("valid", "test")}
    record["wall_s"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / "temporal_preset.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{'preset':<9} {'split':<6} {'const':>6}  {'oracle: score clean text no_text':<34}"
        f"{'pooled: score clean text no_text'}"
    )
    for preset in ("mosi", "temporal"):
        for split, r in record[preset].items():
            cells = [
                " ".join(f"{r[k][p]:.3f}" for p in ("spectrum_score", *POINTS))
                for k in ("oracle", "pooled")
            ]
            print(f"{preset:<9} {split:<6} {r['constant']:>6.3f}  {cells[0]:<34}{cells[1]}")
    print(f"{record['wall_s']} s; written {out}")


if __name__ == "__main__":
    main()
