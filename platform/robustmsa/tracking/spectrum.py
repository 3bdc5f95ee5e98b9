"""Log a spectrum evaluation to MLflow: every point, the summaries, the table and its figures.

What one `log_spectrum` call writes to a run (docs/architecture.md §5), for ``split = "valid"``:

- metrics, all in one batched `log_metrics` call:

  * ``spectrum/<protocol>/<modalities>/<metric>`` at ``step = round(level * 100)``, so MLflow
    draws each reliability curve natively (a ``grid`` row, ``modalities = "text/eta=0.25"``,
    becomes the λ curve ``spectrum/grid/text/eta_0.25/<metric>``);
  * every summary of `summarize` (``robust/<protocol>/<modalities>/auilc_<metric>``, ...) at
    step 0;
  * with ``reference_rows`` (the Bayes oracle on the same points, `evaluation.ceiling`): the
    same two families prefixed ``oracle/``, so a run carries its own ceiling and the MLflow UI
    can plot ``spectrum/...`` against ``oracle/spectrum/...``;

- artifacts: ``spectrum/spectrum_valid.parquet`` (the rows exactly), ``spectrum/
  oracle_valid.parquet`` (with a reference), the table through MLflow's table API as
  ``tables/spectrum_valid.json`` (model and oracle rows, told apart by a ``source`` column, so
  ``MlflowClient.load_table`` compares runs in one call; MLflow writes it through pandas at 10
  significant digits, the Parquet is the exact record; note that ``load_table`` finds runs
  through the fluent API, i.e. ``MLFLOW_TRACKING_URI``, not the client's URI), and the PNG
  figures of `evaluation.figures` for `FIGURE_METRICS` under ``figures/valid/`` (one
  ``log_artifacts`` call).

Another split (``test``) prefixes every metric with ``test/`` and names its files after it.
``source="oracle"`` logs the oracle's own rows as the main table (a study's parent run holds the
oracle once per split: ``oracle/spectrum/...``, ``test/oracle/spectrum/...``, ``spectrum/
oracle_<split>.parquet``, ``tables/oracle_<split>.json``). `log_figures` draws and logs the
figures of a table apart from its numbers (a study draws them only for its selected trial and
its reference; ``robustmsa report`` for any run later).

Metric names: MLflow 3.17 accepts only alphanumerics, ``_ - . /``, space and (not on Windows)
``:`` in a metric name, and the name must equal its own ``posixpath.normpath``. Row fields can
hold other characters (``patterns`` subsets ``text+audio``, ``grid`` scopes ``eta=0.25``), so
`metric_key` maps ``+`` to ``-`` and ``=`` to ``_`` (`METRIC_NAME_MAP`) and raises ValueError
for any other character MLflow would refuse. Two names of one table that map to the same key
(they differ only in ``+``/``-`` or ``=``/``_``; no protocol of `spectrum.protocols` makes such
a pair) are a ValueError too, rather than one silently overwriting the other. All of this is
checked before anything is logged.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from robustmsa.data.schema import SPLITS
from robustmsa.evaluation.figures import curve_figures, heatmap_figures
from robustmsa.evaluation.spectrum import ROW_FIELDS
from robustmsa.evaluation.summaries import summarize
from robustmsa.tracking.runs import log_metrics

METRIC_NAME_MAP = {"+": "-", "=": "_"}
_TRANSLATION = str.maketrans(METRIC_NAME_MAP)
# ':' is left out on purpose: MLflow refuses it on Windows, and a study's names must not
# depend on the tracking server's platform.
_METRIC_NAME_OK = re.compile(r"[A-Za-z0-9_./\- ]+")
MAX_METRIC_KEY = 250  # MLflow's limit on a metric name
ORACLE_PREFIX = "oracle/"
FIGURE_METRICS = ("mae", "corr")  # the objective and the correlation; the rest are in the table
MODEL_SOURCE, ORACLE_SOURCE = "model", "oracle"


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric name (module docstring): ``+`` -> ``-``, ``=`` -> ``_``.
    ValueError naming ``name`` when it holds another refused character, an empty path segment
    or more than 250 characters."""
    key = name.translate(_TRANSLATION)
    if not _METRIC_NAME_OK.fullmatch(key):
        bad = sorted({ch for ch in key if not _METRIC_NAME_OK.fullmatch(ch)})
        raise ValueError(f"metric name {name!r}: MLflow refuses the character(s) {bad}")
    if posixpath.normpath(key) != key:
        raise ValueError(f"metric name {name!r}: empty or relative path segment")
    if len(key) > MAX_METRIC_KEY:
        raise ValueError(f"metric name {name!r}: longer than {MAX_METRIC_KEY} characters")
    return key


def spectrum_metric_name(row: dict, prefix: str = "spectrum") -> str:
    """``<prefix>/<protocol>/<modalities>/<metric>`` of one row, as logged (`metric_key`)."""
    return metric_key(f"{prefix}/{row['protocol']}/{row['modalities']}/{row['metric']}")


def _check_rows(field: str, rows: list[dict]) -> None:
    if not rows:
        raise ValueError(f"{field}: the spectrum table is empty")
    for i, row in enumerate(rows):
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            raise ValueError(f"{field}[{i}]: missing field(s) {missing} (row {row!r})")


def _metrics(rows: list[dict], prefix: str) -> tuple[list[tuple[str, float, int]], dict]:
    """The point metrics and the summaries of ``rows`` under ``prefix`` (``""``, ``test/``,
    ``oracle/``, ...), and the summaries keyed as logged without the prefix."""
    raw_names: dict[str, str] = {}

    def key(name: str) -> str:
        mapped = metric_key(name)
        if raw_names.setdefault(mapped, name) != name:
            raise ValueError(
                f"metric names {raw_names[mapped]!r} and {name!r} both map to {mapped!r}"
            )
        return mapped

    points = []
    for r in rows:
        name = f"{prefix}spectrum/{r['protocol']}/{r['modalities']}/{r['metric']}"
        points.append((key(name), r["value"], round(r["level"] * 100)))
    summaries = {key(k): v for k, v in summarize(rows).items()}
    return points + [(prefix + k, v, 0) for k, v in summaries.items()], summaries


def _table(rows: list[dict], reference_rows: list[dict] | None) -> pd.DataFrame:
    """Model rows then oracle rows, columns `ROW_FIELDS` + ``source``."""
    tagged = [{**r, "source": MODEL_SOURCE} for r in rows]
    tagged += [{**r, "source": ORACLE_SOURCE} for r in reference_rows or []]
    frame = pd.DataFrame(tagged, columns=[*ROW_FIELDS, "source"])
    # `log_table` scans object columns for images; on pandas 3 text columns have the `str`
    # dtype, which that scan still includes but with a deprecation warning on every call.
    # Object columns hold the same strings and write the same JSON.
    return frame.astype({c: object for c in ("protocol", "modalities", "metric", "source")})


def _figures(
    rows: list[dict],
    reference_rows: list[dict] | None,
    out_dir: Path,
    split: str,
    floor: dict[str, float] | None = None,
) -> list[Path]:
    present = {r["metric"] for r in rows}
    paths = []
    for metric in (m for m in FIGURE_METRICS if m in present):
        paths += curve_figures(
            rows,
            out_dir,
            reference_rows=reference_rows,
            metric=metric,
            split=split,
            floor=(floor or {}).get(metric),
        )
        paths += heatmap_figures(rows, out_dir, metric, split=split)
    return paths


def log_figures(
    client: MlflowClient,
    run_id: str,
    rows: list[dict],
    *,
    split: str = "valid",
    reference_rows: list[dict] | None = None,
    out_dir: Path | None = None,
    floor: dict[str, float] | None = None,
) -> list[Path]:
    """Draw the figures of `FIGURE_METRICS` for ``rows`` (the oracle's ``reference_rows`` as
    the ceiling line, the constant predictor's ``floor`` ``{metric: value}`` as the floor) and
    log them to ``run_id`` under ``figures/<split>/``; with ``out_dir`` the PNGs are also kept
    there. Returns the figures' file names (under ``out_dir`` when given)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown (known: {list(SPLITS)})")
    _check_rows("rows", rows)
    with tempfile.TemporaryDirectory() as tmp:
        drawn = _figures(rows, reference_rows, Path(tmp) / "figures", split, floor)
        if not drawn:
            return []
        client.log_artifacts(run_id, str(drawn[0].parent), artifact_path=f"figures/{split}")
        if out_dir is None:
            return [Path(p.name) for p in drawn]
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        for path in drawn:
            kept.append(out_dir / path.name)
            kept[-1].write_bytes(path.read_bytes())
        return kept


def log_spectrum(
    client: MlflowClient,
    run_id: str,
    rows: list[dict],
    *,
    split: str = "valid",
    reference_rows: list[dict] | None = None,
    figures: bool = True,
    source: str = MODEL_SOURCE,
) -> dict[str, float]:
    """Log ``rows`` (long form), their summaries and the table to ``run_id``; with
    ``reference_rows`` also the oracle's points, summaries and table beside them; with
    ``figures`` the PNG figures too (`log_figures`). ``source="oracle"``: ``rows`` are the
    oracle's own (module docstring). Returns the summaries of ``rows``, keyed as logged without
    the prefixes.

    ValueError for an unknown ``split`` or ``source``, an empty or malformed table, or a name
    MLflow refuses; all checked before anything is logged.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown (known: {list(SPLITS)})")
    if source not in (MODEL_SOURCE, ORACLE_SOURCE):
        raise ValueError(f"source {source!r} unknown (known: {[MODEL_SOURCE, ORACLE_SOURCE]})")
    _check_rows("rows", rows)
    if reference_rows is not None:
        _check_rows("reference_rows", reference_rows)
    split_prefix = "" if split == "valid" else f"{split}/"
    own_prefix = split_prefix + (ORACLE_PREFIX if source == ORACLE_SOURCE else "")
    metrics, summaries = _metrics(rows, own_prefix)
    if reference_rows is not None:
        metrics += _metrics(reference_rows, split_prefix + ORACLE_PREFIX)[0]
    log_metrics(client, run_id, metrics)

    name = "spectrum" if source == MODEL_SOURCE else "oracle"
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "spectrum"
        tables.mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tables / f"{name}_{split}.parquet")
        if reference_rows is not None:
            pq.write_table(pa.Table.from_pylist(reference_rows), tables / f"oracle_{split}.parquet")
        client.log_artifacts(run_id, str(tables), artifact_path="spectrum")
    table = _table([], rows) if source == ORACLE_SOURCE else _table(rows, reference_rows)
    client.log_table(run_id, table, f"tables/{name}_{split}.json")
    if figures:
        log_figures(client, run_id, rows, split=split, reference_rows=reference_rows)
    return summaries
