"""The PNG figures a run logged (a comparison's under ``comparison``, a run's spectrum figures
under ``figures/<split>``), read back as bytes for a notebook to show."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def logged_images(client: MlflowClient, run_id: str, folder: str) -> dict[str, bytes]:
    """The PNG files a run logged under ``folder`` (e.g. ``comparison`` or
    ``figures/test``), by file name, sorted; empty when there are none."""
    try:
        listed = sorted(a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir)
    except (MlflowException, OSError):
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="robustmsa-analysis-") as tmp:
        for path in listed:
            if path.endswith(".png"):
                out[path.rsplit("/", 1)[-1]] = Path(
                    client.download_artifacts(run_id, path, tmp)
                ).read_bytes()
    return out
