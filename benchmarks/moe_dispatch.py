"""Cost of QA-MoE's sparse expert dispatch against dense GLU layers, forward + backward.

Goal (issue): the MoE dispatch costs at most 1.5x a dense layer with the same ACTIVE parameters.

Layers, all at `QAMoEConfig`'s defaults (E = ``num_experts`` 8, k = ``top_k`` 3, H = ``hidden``
64, F = ``expert_hidden`` 128, dropout 0.1; read from the config, so these are the model's own
sizes: the expert layer's input is the fused vector of the three modalities, D = 3H = 192, its
output H) and in training mode:

- ``sparse``: `robustmsa.models.qa_moe.GLUExperts` (E, D, F, H), the model's layer, with a real
  router output: logits ~ N(0, 1) (B, E) -> top-k indices -> softmax over the k kept logits (the
  model's `QAMoE._route`), drawn once per B, not timed; the routing weights require a gradient
  as in the model (the router is trained through them);
- ``dense_active``: one GLU with the same ACTIVE parameters as the k experts a sample uses,
  ``W_out (silu(W_g x + b_g) * (W_v x + b_v)) + b_out`` with hidden width k F (D -> 2 k F as
  one GEMM, the gate and value halves side by side like an expert's ``w_in``; then k F -> H);
- ``dense_total``: the same GLU with hidden width E F: as many parameters as all E experts.

Each variant gets the same input rows ``x`` (B, D) (requiring a gradient, as the fused vector
does in the model) and the timed call is ``layer(x).sum().backward()`` (gradients set to None
before each call, outside the timer, as ``zero_grad(set_to_none=True)`` does). Per B in
``--batch-sizes``: warm-up, then ``repeats`` rounds of (sparse, dense_active, dense_total)
interleaved, the order rotated each round; median time per variant, by wall clock and by process
CPU time (which leaves out the time other work on a shared machine holds the cores); ratios of
the medians. ``repeats`` is chosen per B so each variant gets about ``--seconds`` of timed work
(between ``--min-repeats`` and ``--max-repeats``). ``torch.set_num_threads(--threads)``
(default 1). Reported per B: sparse / dense_active and sparse / dense_total, and the smallest B
from which on the goal holds.

    .venv/bin/python benchmarks/moe_dispatch.py [--threads 1]

Results go to benchmarks/results/moe_dispatch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
VARIANTS = ("sparse", "dense_active", "dense_total")
GOAL = 1.5


class DenseGLU(nn.Module):
    """One GLU expert's form at any hidden width: ``Linear(D, 2 W)`` (gate | value), ``silu(gate)
    * value``, dropout, ``Linear(W, d_out)``."""

    def __init__(self, d_in: int, width: int, d_out: int, dropout: float):
        super().__init__()
        self.proj_in = nn.Linear(d_in, 2 * width)
        self.proj_out = nn.Linear(width, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(F.silu(gate) * value))


def route(b: int, num_experts: int, top_k: int, generator: torch.Generator):
    """A router output as `QAMoE._route` makes it from random logits: (index, weight)."""
    logits = torch.randn(b, num_experts, generator=generator)
    top_logits, index = logits.topk(top_k, dim=-1)
    return index, top_logits.softmax(dim=-1)


def measure(calls: dict, leaves: list[torch.Tensor], args) -> dict:
    """Median seconds per call of each of ``calls`` (interleaved, order rotated per round), by
    wall clock and by process CPU time; and the number of rounds."""
    modules = [m for m, _ in calls.values()]

    def clear():
        for t in leaves:
            t.grad = None
        for m in modules:
            m.zero_grad(set_to_none=True)

    def once(name: str) -> tuple[float, float]:
        clear()
        run = calls[name][1]
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - started, time.process_time() - started_cpu

    names = list(calls)
    for _ in range(args.warmup):
        for name in names:
            once(name)
    probe = max(statistics.median(once(n)[0] for _ in range(3)) for n in names)
    repeats = int(min(args.max_repeats, max(args.min_repeats, args.seconds / probe)))
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            w, c = once(name)
            wall[name].append(w)
            cpu[name].append(c)
    return {
        "wall": {n: statistics.median(t) for n, t in wall.items()},
        "cpu": {n: statistics.median(t) for n, t in cpu.items()},
        "repeats": repeats,
    }


def ratios(got: dict[str, float]) -> dict[str, float]:
    return {
        "sparse_over_dense_active": round(got["sparse"] / got["dense_active"], 2),
        "sparse_over_dense_total": round(got["sparse"] / got["dense_total"], 2),
        "dense_total_over_dense_active": round(got["dense_total"] / got["dense_active"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024, 4096]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed work per variant per B")
    parser.add_argument("--min-repeats", type=int, default=30)
    parser.add_argument("--max-repeats", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from robustmsa.models.qa_moe import GLUExperts, QAMoEConfig

    cfg = QAMoEConfig()
    e, k, h, f = cfg.num_experts, cfg.top_k, cfg.hidden, cfg.expert_hidden
    d_in = 3 * h  # the fused vector concat(g_t, g_a, g_v)
    torch.manual_seed(0)
    sparse = GLUExperts(e, d_in, f, h, cfg.dropout).train()
    dense_active = DenseGLU(d_in, k * f, h, cfg.dropout).train()
    dense_total = DenseGLU(d_in, e * f, h, cfg.dropout).train()
    params = {
        "sparse_total": sum(p.numel() for p in sparse.parameters()),
        "sparse_active_per_sample": k * (d_in * 2 * f + 2 * f + f * h + h),
        "dense_active": sum(p.numel() for p in dense_active.parameters()),
        "dense_total": sum(p.numel() for p in dense_total.parameters()),
    }
    generator = torch.Generator().manual_seed(0)
    rows = []
    for b in args.batch_sizes:
        x = torch.randn(b, d_in, generator=generator).requires_grad_()
        index, weight = route(b, e, k, generator)
        weight.requires_grad_()
        calls = {
            "sparse": (sparse, lambda x=x, i=index, w=weight: sparse(x, i, w).sum().backward()),
            "dense_active": (dense_active, lambda x=x: dense_active(x).sum().backward()),
            "dense_total": (dense_total, lambda x=x: dense_total(x).sum().backward()),
        }
        got = measure(calls, [x, weight], args)
        row = {"B": b, "repeats": got["repeats"]}
        for clock in ("wall", "cpu"):
            row[clock] = {f"{n}_ms": round(1e3 * got[clock][n], 4) for n in VARIANTS}
            row[clock] |= ratios(got[clock])
        rows.append(row)
        w, c = row["wall"], row["cpu"]
        print(
            f"B {b:>5}: wall ms sparse {w['sparse_ms']:.3f} active {w['dense_active_ms']:.3f} "
            f"total {w['dense_total_ms']:.3f} | sparse/active wall "
            f"{w['sparse_over_dense_active']:.2f} cpu {c['sparse_over_dense_active']:.2f} | "
            f"sparse/total wall {w['sparse_over_dense_total']:.2f} "
            f"cpu {c['sparse_over_dense_total']:.2f} ({got['repeats']} repeats)",
            flush=True,
        )
    goal = {}
    for clock in ("wall", "cpu"):
        met = [r["B"] for r in rows if r[clock]["sparse_over_dense_active"] <= GOAL]
        # The smallest B from which on the goal holds at every larger measured B too.
        from_b = next(
            (r["B"] for i, r in enumerate(rows) if all(q["B"] in met for q in rows[i:])), None
        )
        goal[clock] = {"met_at_B": met, "met_from_B": from_b}
    result = {
        "layer": (
            f"GLUExperts E={e} k={k} D=3H={d_in} F={f} d_out=H={h} dropout={cfg.dropout} "
            "(QAMoEConfig defaults), training mode, forward + backward of output.sum()"
        ),
        "dense_active": f"GLU {d_in} -> 2x{k * f} -> {h} (same active parameters)",
        "dense_total": f"GLU {d_in} -> 2x{e * f} -> {h} (same total parameters)",
        "parameters": params,
        "use_grouped_mm": sparse.use_grouped_mm,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "statistic": (
            "median per call, variants interleaved; wall: time.perf_counter, cpu: "
            "time.process_time (leaves out the time other work on a shared machine holds the "
            "cores)"
        ),
        "rows": rows,
        "goal": f"sparse / dense_active <= {GOAL}",
        "goal_result": goal,
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "moe_dispatch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ngoal sparse/dense_active <= {GOAL}:")
    for clock, g in goal.items():
        print(f"  {clock}: met at B in {g['met_at_B']}; holds from B = {g['met_from_B']} on")


if __name__ == "__main__":
    main()
