"""Study kind ``confirm``: one config re-trained over training seeds, paired with the reference.

Section ``confirm:`` (`ConfirmSection`): ``seeds`` (at least 2) training seeds, the config's
own ``training.seed`` first and the next ones after it, so seed one reproduces the confirmed
run; ``source_run_id``: the run whose config this is (`robustmsa reproduce --seeds N` writes
both). Each seed trains the study's config (role ``seed-<s>``) and the reference model at its
defaults (``study.reference_model``, role ``reference-seed-<s>``) with the same seed: a paired
design, the same seed giving both the same data order and corruption draws. Every run is an
ordinary child run of the study's parent, evaluated once on test.

For each split (``valid``: the rows of each run's chosen epoch; ``test``: its one test report,
kept at the same points, ``spectrum.protocols``, as `compare_models` keeps it, so that a summary
means the same on both splits and beside a comparison's oracle) and every summary of the MAE
(``spectrum_score``, each curve's ``auilc_mae`` and ``mean_mae``, each point set's ``mean_mae``,
and ``worst_point_mae``, the largest MAE of any point), the table (`ConfirmRow`) gives the mean
over seeds, the sample standard deviation, the 95 % confidence interval of the mean (Student's t
with n - 1 degrees of freedom) for the confirmed config, for the reference, and for their paired
difference (confirmed minus reference; an interval that excludes 0 says the difference is larger
than the seeds' spread). Logged on the parent as
``confirm/<split>/<model>/<summary>/{mean,std,ci_low,ci_high}`` (``=`` in a grid point's name
as ``_``, `robustmsa.tracking.spectrum.metric_key`), a Parquet artifact, an MLflow table and a
figure.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from robustmsa.config import StudyConfig
from robustmsa.errors import ConfigError
from robustmsa.search.kinds.base import ConfirmRow, StudyKind, StudyResult, StudySetup, Variant

CONFIRMED, REFERENCE, DIFFERENCE = "confirmed", "reference", "difference"
CONFIRM_TABLE = "tables/confirm.json"


@dataclass
class ConfirmSection:
    """The ``confirm:`` section (module docstring)."""

    seeds: int = 3
    source_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.seeds < 2:
            raise ValueError(
                f"seeds: a confirmation needs at least 2 seeds (a spread to estimate), got "
                f"{self.seeds}"
            )


def check(config: StudyConfig) -> None:
    if config.study.reference_model is None:
        raise ConfigError(
            "study.reference_model: a confirmation pairs every seed with the reference model; "
            "name one (late_fusion)"
        )


def seeds(config: StudyConfig) -> list[int]:
    """The training seeds: the config's own first."""
    first = config.training.seed
    return [first + k for k in range(config.kind_section.seeds)]


def variants(config: StudyConfig) -> list[Variant]:
    """Per seed: the config (``seed-<s>``) and the reference (``reference-seed-<s>``)."""
    out = []
    for s in seeds(config):
        out.append(Variant(f"seed-{s}", {"training.seed": s}))
        out.append(
            Variant(
                f"reference-seed-{s}",
                {
                    "training.seed": s,
                    "model.name": config.study.reference_model,
                    "model.params": {},
                },
            )
        )
    return out


def seed_summaries(rows: list[dict]) -> dict[str, float]:
    """The summaries of one run's rows that the table reports (module docstring)."""
    from robustmsa.evaluation.summaries import spectrum_score, summarize

    out = {"spectrum_score": spectrum_score(rows)}
    for key, value in summarize(rows).items():
        if key.endswith(("/auilc_mae", "/mean_mae")):
            out[key.removeprefix("robust/")] = value
    out["worst_point_mae"] = max(r["value"] for r in rows if r["metric"] == "mae")
    return out


def interval(values: list[float]) -> tuple[float, float, float, float]:
    """``(mean, sample std, 95 % CI low, high)`` of ``values`` (Student's t, n - 1 d.o.f.)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def confirm_table(
    confirmed: list[dict[str, float]], reference: list[dict[str, float]], split: str
) -> list[ConfirmRow]:
    """Rows for every summary: the confirmed config's, the reference's and their paired
    difference's statistics over seeds (``confirmed[i]`` and ``reference[i]`` share seed i)."""
    if len(confirmed) != len(reference) or len(confirmed) < 2:
        raise ValueError(
            f"paired seeds needed: {len(confirmed)} confirmed, {len(reference)} reference"
        )
    out = []
    for summary in confirmed[0]:
        mine = [c[summary] for c in confirmed]
        theirs = [r[summary] for r in reference]
        paired = [a - b for a, b in zip(mine, theirs, strict=True)]
        for model, values in ((CONFIRMED, mine), (REFERENCE, theirs), (DIFFERENCE, paired)):
            out.append(ConfirmRow(split, summary, model, *interval(values), n=len(values)))
    return out


def log_confirm_table(client, run_id: str, table: list[ConfirmRow]) -> None:
    """Metrics, Parquet artifact, MLflow table and figure on the parent (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustmsa.tracking.runs import log_metrics
    from robustmsa.tracking.spectrum import metric_key

    metrics = []
    for r in table:
        # A grid point's summary names its level (``eta=0.00``): MLflow's names refuse '='.
        key = metric_key(f"confirm/{r.split}/{r.model}/{r.summary}")
        for stat in ("mean", "std", "ci_low", "ci_high"):
            metrics.append((f"{key}/{stat}", getattr(r, stat), 0))
    log_metrics(client, run_id, metrics)
    plain = [dataclasses.asdict(r) for r in table]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "confirm"
        out.mkdir()
        pq.write_table(pa.Table.from_pylist(plain), out / "confirm.parquet")
        splits = list(dict.fromkeys(r.split for r in table))
        fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4), squeeze=False)
        for ax, split in zip(axes[0], splits, strict=True):
            rows = [r for r in table if r.split == split and r.summary == "spectrum_score"]
            for i, r in enumerate(rows):
                ax.errorbar(i, r.mean, yerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]],
                            fmt="o", capsize=6)  # fmt: skip
            ax.axhline(0.0, color="grey", lw=0.5)
            ax.set_xticks(range(len(rows)), [r.model for r in rows])
            ax.set_title(f"{split}: spectrum score, mean and 95 % CI over {rows[0].n} seeds")
        fig.tight_layout()
        fig.savefig(out / "confirm_spectrum_score.png", dpi=100)
        plt.close(fig)
        client.log_artifacts(run_id, str(out), artifact_path="confirm")
    client.log_table(run_id, pd.DataFrame(plain), CONFIRM_TABLE)


def run(setup: StudySetup) -> None:
    from robustmsa.search.kinds.compare_models import logged_test_rows, point_rows

    config = setup.config
    plan = variants(config)
    valid = setup.train(plan, "confirm")
    reports = logged_test_rows(setup.client, setup.result.experiment_id, setup.parent, list(valid))
    test = {role: point_rows(rows, config.spectrum.protocols) for role, rows in reports.items()}
    table = []
    for split, by_role in (("valid", valid), ("test", test)):
        mine = [seed_summaries(by_role[f"seed-{s}"]) for s in seeds(config)]
        theirs = [seed_summaries(by_role[f"reference-seed-{s}"]) for s in seeds(config)]
        table += confirm_table(mine, theirs, split)
    log_confirm_table(setup.client, setup.parent, table)
    setup.result.rows = table


def format_lines(result: StudyResult) -> list[str]:
    """The spectrum score per split: mean ± CI of the config, the reference, the difference."""
    lines = ["Spectrum score over seeds (mean [95 % CI]):"]
    for r in result.rows:
        if r.summary == "spectrum_score":
            lines.append(
                f"  {r.split:<6} {r.model:<11} {r.mean:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]"
                f"  std {r.std:.4f}  n={r.n}"
            )
    return lines


KIND = StudyKind(
    name="confirm",
    section=ConfirmSection,
    run=run,
    trial_count=lambda config: 2 * config.kind_section.seeds,
    check=check,
    reference="none",
    smoke={"confirm.seeds": 2},
    format=format_lines,
)
