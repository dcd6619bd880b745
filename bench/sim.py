"""Simulator benchmark: prints ONE JSON object.

For each network size (default 4, 8, 16, 100, 300 nodes, all validators,
3 radios and 1 compute provider per node as `depin-devnet up` lays them
out), runs `depin-devnet sim`'s engine for ``--epochs`` epochs of 10 s and
reports the CPU seconds per simulated epoch and the simulated node-epochs
per CPU second. Sizes are run smallest first; once one size's predicted
cost (from the growth measured so far) exceeds ``--budget-s``, the larger
sizes are skipped and listed under ``skipped`` with the predicted seconds,
so the output says where the simulator bends instead of running for hours.

Keys (stable): ``rows`` (``nodes``, ``epochs``, ``cpu_s``, ``wall_s``, ``seconds_per_epoch``
(CPU), ``node_epochs_per_s`` (per CPU second)), ``simulator`` (``nodes``, ``seconds_per_epoch``:
the same figures under the names bench/scale.py uses), ``growth_exponent`` (least-squares slope of
log(seconds per epoch) over log(nodes) across the measured rows),
``skipped`` (``nodes``, ``predicted_seconds_per_epoch``).

Run: ``.venv/bin/python bench/sim.py [--sizes 4,8,16,100,300] [--epochs 2] [--budget-s 300]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from devnet.manifest import parse_manifest
from devnet.sim import simulate


def fit(rows: list[dict[str, float]]) -> float | None:
    pts = [(math.log(r["nodes"]), math.log(r["seconds_per_epoch"])) for r in rows if r["seconds_per_epoch"]]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def measure(nodes: int, epochs: int) -> dict[str, float]:
    """One simulator row: ``nodes`` validators for ``epochs`` epochs of 10 s, CPU and wall seconds."""
    manifest = parse_manifest(f"[network]\nnodes = {nodes}\nepochs = {epochs}\nepoch_seconds = 10\n")
    started, wall_started = time.process_time(), time.perf_counter()
    run = simulate(manifest, 1)
    cpu = time.process_time() - started
    wall = time.perf_counter() - wall_started
    committed = min(len(node.epochs) for node in run.nodes)
    return {
        "nodes": nodes,
        "epochs": committed,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "seconds_per_epoch": round(cpu / epochs, 3),
        "node_epochs_per_s": round(nodes * committed / cpu, 2),
    }


def measure_sizes(
    sizes: list[int], epochs: int, budget_s: float
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Rows for ``sizes``, smallest first; a size predicted to cost more than ``budget_s`` is skipped."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # nodes' logs
    rows: list[dict[str, float]] = []
    skipped: list[dict[str, float]] = []
    for n in sorted(sizes):
        exponent = fit(rows)
        if rows and exponent is not None:
            last = rows[-1]
            predicted = last["seconds_per_epoch"] * (n / last["nodes"]) ** exponent
            if predicted * epochs > budget_s:
                skipped.append({"nodes": n, "predicted_seconds_per_epoch": round(predicted, 1)})
                continue
        rows.append(measure(n, epochs))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,8,16,100,300")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip a size predicted to cost more")
    args = parser.parse_args()
    rows, skipped = measure_sizes([int(s) for s in args.sizes.split(",")], args.epochs, args.budget_s)
    exponent = fit(rows)
    doc = {
        "rows": rows,
        # issue 13's names: the simulator's rows (CPU seconds per simulated epoch) and the fit
        "simulator": [{"nodes": r["nodes"], "seconds_per_epoch": r["seconds_per_epoch"]} for r in rows],
        "growth_exponent": None if exponent is None else round(exponent, 2),
        "skipped": skipped,
        "budget_s": args.budget_s,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
