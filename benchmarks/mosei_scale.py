"""MOSEI-sized data: MMSA pickle import, Parquet load vs unpickling, reader throughput, memory.

Builds a synthetic MMSA ``unaligned_50.pkl`` with MOSEI's split sizes and shapes
(docs/references.md "Datasets": 16326 / 1871 / 4659 samples; text (50, 768), audio
(500, 74), vision (500, 35), float32, ``-inf`` in audio as in the real files), then
measures in one run:

- import time (``robustmsa data import mmsa``) of that pickle;
- load time of the resulting Parquet dataset versus ``pickle.load`` of the original, as a
  ratio: ``open_dataset`` the first time (validates every frame and builds the frame cache)
  and every later time (maps the cache);
- epoch iteration throughput (shuffled batches of 32) of the Parquet reader versus the same
  split as in-memory padded tensors (goal: at least 0.9 of in-memory), the peak resident
  memory of each, and the reader's anonymous (not file-backed) memory after the epoch: mapped
  cache pages count in the peak RSS but are page cache the kernel can drop.

    .venv/bin/python benchmarks/mosei_scale.py [--fraction 1.0] [--workdir /tmp]

``--fraction`` scales the sample counts (the shapes stay MOSEI's). Full size needs about 9 GB
for the pickle and 9 GB for the Parquet on disk, and about 15 GB of memory at the import's
peak. Results go to benchmarks/results/mosei_scale.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"train": 16326, "valid": 1871, "test": 4659}
SHAPES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}


def write_pickle(path: Path, fraction: float, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    data, sizes = {}, {}
    for split, n_full in SIZES.items():
        n = max(8, int(n_full * fraction))
        sizes[split] = n
        lengths = {m: rng.integers(T // 4, T + 1, size=n) for m, (T, _) in SHAPES.items()}
        arrays = {}
        for m, (T, d) in SHAPES.items():
            x = rng.standard_normal((n, T, d), dtype=np.float32)
            x[np.arange(T)[None, :] >= lengths[m][:, None]] = 0.0  # padding
            arrays[m] = x
        arrays["audio"][:, :, 0][rng.random((n, SHAPES["audio"][0])) < 0.01] = -np.inf
        ids = np.array([f"{split}{i // 10}$_${i % 10}" for i in range(n)], dtype=object)
        bert = np.zeros((n, 3, 50), dtype=np.float32)
        for i, length in enumerate(lengths["text"]):
            bert[i, 0, :length] = rng.integers(1000, 30000, size=length)
            bert[i, 0, 0], bert[i, 0, length - 1] = 101, 102
            bert[i, 1, :length] = 1
        data[split] = {
            "id": ids,
            "raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
            "text": arrays["text"],
            "text_bert": bert,
            "audio": arrays["audio"],
            "vision": arrays["vision"],
            "audio_lengths": lengths["audio"].tolist(),
            "vision_lengths": lengths["vision"].tolist(),
            "regression_labels": np.clip(rng.normal(0.1, 1.2, n), -3, 3).astype(np.float32),
        }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return sizes


def child(code: str, frame_cache: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line. Peak RSS is per process."""
    env = {**os.environ, "ROBUSTMSA_FRAME_CACHE": str(frame_cache)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="robustmsa-mosei-", dir=args.workdir))
    try:
        pkl, out, cache = work / "unaligned_50.pkl", work / "mosei", work / "frames"
        t = time.perf_counter()
        sizes = write_pickle(pkl, args.fraction)
        gc.collect()
        build_s = time.perf_counter() - t
        # VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so every child would report
        # this parent's peak (it built the pickle in memory).
        maxrss = (
            "[int(line.split()[1]) for line in open('/proc/self/status')"
            " if line.startswith('VmHWM')][0] / 2**20"
        )
        imported = child(
            "import json, time, resource\n"
            "from pathlib import Path\n"
            "from robustmsa.data.importers.mmsa import import_mmsa\n"
            "t = time.perf_counter()\n"
            f"s = import_mmsa(Path({str(pkl)!r}), Path({str(out)!r}), trust_pickle=True,"
            " show_progress=False)\n"
            f"print(json.dumps({{'s': time.perf_counter() - t, 'peak_gib': {maxrss},"
            " 'sanitized': s.sanitized}))\n",
            cache,
        )
        unpickled = child(
            "import json, pickle, time, resource\n"
            "t = time.perf_counter()\n"
            f"d = pickle.load(open({str(pkl)!r}, 'rb'))\n"
            f"print(json.dumps({{'s': time.perf_counter() - t, 'peak_gib': {maxrss}}}))\n",
            cache,
        )
        pickle_gib = round(pkl.stat().st_size / 2**30, 2)
        pkl.unlink()  # its pages would crowd the page cache that the reader's epochs use
        open_code = (
            "import json, time, resource\n"
            "from robustmsa.data.parquet import open_dataset\n"
            "t = time.perf_counter()\n"
            f"d = open_dataset({str(out)!r})\n"
            f"print(json.dumps({{'s': time.perf_counter() - t, 'peak_gib': {maxrss}}}))\n"
        )
        first_open = child(open_code, cache)
        loaded = child(open_code, cache)
        epoch = (
            "import json, time, resource, numpy as np, torch\n"
            "from robustmsa.data.parquet import open_dataset\n"
            f"split = open_dataset({str(out)!r})['train']\n"
            "order = np.random.default_rng(0).permutation(len(split))\n"
            "def batches(get):\n"
            "    for i in range(0, len(order), 32):\n"
            "        get(order[i:i + 32])\n"
        )
        anon = (
            "[int(line.split()[1]) for line in open('/proc/self/status')"
            " if line.startswith('RssAnon')][0] / 2**20"
        )
        # Three epochs: the first maps the cache's pages into the process (and reads them from
        # disk when the page cache does not hold them); later ones are the steady state.
        mmap_run = child(
            epoch + "times = []\n"
            "for _ in range(3):\n"
            "    t = time.perf_counter()\n"
            "    batches(split.batch)\n"
            "    times.append(time.perf_counter() - t)\n"
            f"print(json.dumps({{'s': min(times[1:]), 'first_s': times[0], 'peak_gib': {maxrss},"
            f" 'anon_gib': {anon}}}))\n",
            cache,
        )
        memory_run = child(
            epoch + "full = split.batch(np.arange(len(split)))\n"
            "times = []\n"
            "for _ in range(3):\n"
            "    t = time.perf_counter()\n"
            "    batches(lambda i: full.subset(torch.from_numpy(i)))\n"
            "    times.append(time.perf_counter() - t)\n"
            f"print(json.dumps({{'s': min(times[1:]), 'first_s': times[0],"
            f" 'peak_gib': {maxrss}}}))\n",
            cache,
        )
        result = {
            "fraction": args.fraction,
            "samples": sizes,
            "pickle_gib": pickle_gib,
            "parquet_gib": round(sum(f.stat().st_size for f in out.iterdir()) / 2**30, 2),
            "build_pickle_s": round(build_s, 1),
            "import_s": round(imported["s"], 1),
            "import_peak_rss_gib": round(imported["peak_gib"], 2),
            "sanitized_values": imported["sanitized"],
            "frame_cache_gib": round(
                sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**30, 2
            ),
            "unpickle_s": round(unpickled["s"], 2),
            "unpickle_peak_rss_gib": round(unpickled["peak_gib"], 2),
            "parquet_first_open_s": round(first_open["s"], 2),
            "parquet_first_open_peak_rss_gib": round(first_open["peak_gib"], 2),
            "parquet_open_s": round(loaded["s"], 2),
            "parquet_open_peak_rss_gib": round(loaded["peak_gib"], 2),
            "load_ratio_unpickle_over_parquet_first_open": round(
                unpickled["s"] / first_open["s"], 1
            ),
            "load_ratio_unpickle_over_parquet_open": round(unpickled["s"] / loaded["s"], 1),
            "first_train_epoch_s_parquet_reader": round(mmap_run["first_s"], 2),
            "first_train_epoch_s_in_memory": round(memory_run["first_s"], 2),
            "first_epoch_throughput_ratio": round(memory_run["first_s"] / mmap_run["first_s"], 2),
            "train_epoch_s_parquet_reader": round(mmap_run["s"], 2),
            "train_epoch_s_in_memory": round(memory_run["s"], 2),
            "throughput_ratio_reader_over_in_memory": round(memory_run["s"] / mmap_run["s"], 2),
            "peak_rss_gib_parquet_reader": round(mmap_run["peak_gib"], 2),
            "anon_rss_gib_parquet_reader_after_epoch": round(mmap_run["anon_gib"], 2),
            "peak_rss_gib_in_memory": round(memory_run["peak_gib"], 2),
            "date": time.strftime("%Y-%m-%d"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (HERE / "results").mkdir(exist_ok=True)
    name = "mosei_scale.json" if args.fraction == 1.0 else f"mosei_scale_{args.fraction}.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
