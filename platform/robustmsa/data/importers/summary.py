"""What an importer reports when it is done, and its progress bar."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import SplitArrays
from robustmsa.data.schema import SPLITS

T = TypeVar("T")


@dataclass
class ImportSummary:
    """Counts per split, presence per split and modality, and values sanitised on the way."""

    out: Path
    source: str
    digest: str
    counts: dict[str, int] = field(default_factory=dict)
    present: dict[str, dict[str, int]] = field(default_factory=dict)
    sanitized: int = 0

    @classmethod
    def of(
        cls, out: Path, source: str, digest: str, splits: dict[str, SplitArrays], sanitized: int
    ) -> ImportSummary:
        return cls(
            out=out,
            source=source,
            digest=digest,
            counts={s: len(splits[s].ids) for s in SPLITS},
            present={s: {m: int(splits[s].present[m].sum()) for m in MODALITIES} for s in SPLITS},
            sanitized=sanitized,
        )

    def format(self) -> str:
        lines = [f"imported {self.source} -> {self.out} (digest {self.digest})"]
        for s in SPLITS:
            pres = ", ".join(f"{m} {self.present[s][m]}/{self.counts[s]}" for m in MODALITIES)
            lines.append(f"  {s:<5} {self.counts[s]:>6} samples; present: {pres}")
        lines.append(f"  non-finite feature values set to 0: {self.sanitized}")
        return "\n".join(lines)


def progress(items: Iterable[T], total: int | None, desc: str, enabled: bool) -> Iterator[T]:
    """``items`` with a progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)
