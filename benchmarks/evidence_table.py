"""One table and one figure per dataset from every `evidence.py` result: the models side by side.

Results trained with another setting (an override such as ``training.target_link=...``, which
changes the reference too) form a group of their own beside their dataset's (`group_of`).

Each ``results/evidence_<name>.json`` holds one or more models confirmed over training seeds on
one dataset (a synthetic preset, or real data imported to Parquet), each paired seed by seed with
the reference (late fusion). This script groups the files by dataset and writes, per dataset and
split:

- a markdown table: every model's spectrum score (spectrum-averaged MAE) with its 95 % interval,
  its paired difference to late fusion with its interval, the AUILC of MAE of each curve, and the
  excess over the Bayes oracle relative to the oracle (synthetic data) or the margin below the
  constant predictor (real data); late fusion's own row comes from the first file (every file's
  reference rows are the same seeds of the same model);
- a figure (``results/evidence_<dataset>.png``): each model's interval, late fusion's, and the
  oracle's and the constant predictor's scores as vertical lines.

    .venv/bin/python benchmarks/evidence_table.py [--split test] [--results benchmarks/results]

The tables are printed; the figures are written beside the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = "late_fusion"


def dataset_of(result: dict) -> str:
    """The dataset a result was measured on, from its overrides: ``mosi`` (the comparison
    config's preset) unless ``data.preset`` or a Parquet ``data.path`` says otherwise."""
    overrides = dict(o.split("=", 1) for o in result.get("overrides", []) if "=" in o)
    if overrides.get("data.source") == "parquet":
        return Path(overrides["data.path"]).name
    return overrides.get("data.preset", "mosi")


def group_of(result: dict) -> str:
    """The dataset, followed by every override that changes how the models (the reference
    included) are trained, e.g. ``mosi, training.target_link=normal_score``: results are only
    set side by side where their late-fusion references are the same runs."""
    setting = [
        o
        for o in result.get("overrides", [])
        if "=" in o and not o.startswith(("data.", "compare_models.models="))
    ]
    return ", ".join([dataset_of(result), *setting])


def figure_name(group: str) -> str:
    """``evidence_<group>.png`` with every character other than letters, digits, ``-`` and
    ``_`` made ``_`` (``evidence_mosi.png``,
    ``evidence_mosi_training_target_link_normal_score.png``)."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in group.replace(", ", "_"))
    return f"evidence_{name}.png"


def load(results: Path) -> dict[str, list[tuple[str, dict]]]:
    """``{group: [(file stem, result), ...]}`` of every evidence result, in name order
    (`group_of`)."""
    by_group: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(results.glob("evidence_*.json")):
        result = json.loads(path.read_text())
        by_group.setdefault(group_of(result), []).append((path.stem, result))
    return by_group


def interval(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def rows(entries: list[tuple[str, dict]], split: str) -> list[dict]:
    """One row per model (late fusion first), each with its label and summaries."""
    out = []
    first = entries[0][1]
    ref = next(iter(first["models"].values()))[split]["reference_spectrum_score"]
    out.append({"label": REFERENCE, "score": ref, "difference": None, "auilc": None})
    seen: dict[str, int] = {}
    for stem, result in entries:
        for model, summary in result["models"].items():
            seen[model] = seen.get(model, 0) + 1
            label = model if seen[model] == 1 else f"{model} ({stem.removeprefix('evidence_')})"
            s = summary[split]
            out.append(
                {
                    "label": label,
                    "score": s["spectrum_score"],
                    "difference": s["difference_to_reference"],
                    "auilc": s["auilc_mae"],
                }
            )
    return out


def table(dataset: str, entries: list[tuple[str, dict]], split: str) -> str:
    first = entries[0][1]
    oracle = first["oracle_spectrum_score"][split]
    constant = first["constant_spectrum_score"][split]
    curves = sorted(next(iter(first["models"].values()))[split]["auilc_mae"])
    bound = "excess over the oracle" if oracle is not None else "below the constant"
    head = ["model", "spectrum MAE [95 %]", "minus late fusion [95 %]"]
    head += [f"AUILC {c}" for c in curves] + [bound]
    lines = [
        f"{dataset}, {split} split ({first['seeds']} training seeds; oracle "
        + (f"{oracle:.3f}" if oracle is not None else "none: real data")
        + f", constant {constant:.3f}):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows(entries, split):
        mean = row["score"]["mean"]
        gap = (
            f"{100 * (mean - oracle) / oracle:.0f} %"
            if oracle is not None
            else f"{constant - mean:+.3f}"
        )
        cells = [
            row["label"],
            interval(row["score"]),
            interval(row["difference"]) if row["difference"] else "(reference)",
        ]
        cells += [f"{row['auilc'][c]['mean']:.3f}" if row["auilc"] else "" for c in curves]
        lines.append("| " + " | ".join([*cells, gap]) + " |")
    return "\n".join(lines)


def figure(dataset: str, entries: list[tuple[str, dict]], split: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = entries[0][1]
    oracle = first["oracle_spectrum_score"][split]
    constant = first["constant_spectrum_score"][split]
    data = rows(entries, split)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(data) + 1.4))
    for y, row in enumerate(data):
        s = row["score"]
        color = "tab:gray" if row["label"] == REFERENCE else "tab:blue"
        ax.errorbar(
            s["mean"],
            y,
            xerr=[[s["mean"] - s["ci_low"]], [s["ci_high"] - s["mean"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
    if oracle is not None:
        ax.axvline(oracle, color="tab:green", linestyle="--", label=f"Bayes oracle {oracle:.3f}")
    ax.axvline(constant, color="tab:red", linestyle=":", label=f"constant {constant:.3f}")
    ax.set_yticks(range(len(data)), [r["label"] for r in data])
    ax.invert_yaxis()
    ax.set_xlabel(f"spectrum MAE, {split} split (mean, 95 % interval)")
    ax.set_title(f"{dataset}: models over {first['seeds']} training seeds")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    by_dataset = load(args.results)
    if not by_dataset:
        parser.error(f"no evidence_*.json in {args.results}")
    for dataset, entries in by_dataset.items():
        print(table(dataset, entries, args.split) + "\n")
        figure(dataset, entries, args.split, args.results / figure_name(dataset))


if __name__ == "__main__":
    main()
