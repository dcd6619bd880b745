"""What grew between two tracemalloc snapshots (``DEPIN_TRACEMALLOC``, see depin_p2p/heapdump.py).

Run: ``.venv/bin/python bench/heapdiff.py OLD.tracemalloc NEW.tracemalloc [--top 25] [--by lineno]``.
Prints one JSON object: ``traced_mb`` (old, new), ``growth`` (the ``--top``
allocation sites by bytes grown: ``site``, ``kb``, ``count``), sites in this
repository and its dependencies alike.
"""

from __future__ import annotations

import argparse
import json
import tracemalloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--by", choices=("lineno", "filename", "traceback"), default="lineno")
    args = parser.parse_args()
    old = tracemalloc.Snapshot.load(args.old)
    new = tracemalloc.Snapshot.load(args.new)
    growth = []
    for stat in new.compare_to(old, args.by)[: args.top]:
        site = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback))
        growth.append({"site": site, "kb": round(stat.size_diff / 1000, 1), "count": stat.count_diff})
    traced = [round(sum(t.size for t in s.traces) / 1e6, 2) for s in (old, new)]
    print(json.dumps({"traced_mb": traced, "growth": growth}, indent=1))


if __name__ == "__main__":
    main()
