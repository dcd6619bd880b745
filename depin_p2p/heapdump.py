"""Debug only: periodic tracemalloc snapshots of a running node, to find what grows.

Off by default. With ``DEPIN_TRACEMALLOC=DIR`` in its environment,
``depin-p2p run`` starts :mod:`tracemalloc` and writes a snapshot every
``DEPIN_TRACEMALLOC_EVERY_S`` seconds (default 60) to
``DIR/<node home name>-<pid>-<n>.tracemalloc``; ``DEPIN_TRACEMALLOC_FRAMES``
(default 1) frames are kept per allocation. Tracing slows the node (roughly
1.5-2x CPU) and the snapshots hold only Python allocations, not LMDB's
pages. Compare two of them with ``python bench/heapdiff.py OLD NEW``.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from depin_p2p.errors import ConfigError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.heapdump")

ENV_DIR = "DEPIN_TRACEMALLOC"
ENV_EVERY_S = "DEPIN_TRACEMALLOC_EVERY_S"
ENV_FRAMES = "DEPIN_TRACEMALLOC_FRAMES"


@dataclass(frozen=True, slots=True)
class HeapDumpSettings:
    directory: Path
    every_s: float = 60.0
    frames: int = 1


def settings_from_env(environ: Mapping[str, str]) -> HeapDumpSettings | None:
    """The settings ``environ`` asks for, or None when ``DEPIN_TRACEMALLOC`` is unset or empty.

    Raises:
        ConfigError: an interval or frame count that is not a positive number.
    """
    directory = environ.get(ENV_DIR, "")
    if not directory:
        return None
    try:
        every_s = float(environ.get(ENV_EVERY_S, "60"))
        frames = int(environ.get(ENV_FRAMES, "1"))
    except ValueError:
        every_s = frames = 0
    if not every_s > 0 or frames < 1:
        raise ConfigError(f"{ENV_EVERY_S} and {ENV_FRAMES} must be positive numbers")
    return HeapDumpSettings(Path(directory), every_s, frames)


async def dump_heap_snapshots(
    settings: HeapDumpSettings, name: str, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Trace allocations and write a snapshot every ``settings.every_s`` seconds, forever.

    The first snapshot is written at once. Cancellation: stops tracing; the
    snapshots written stay.
    """
    settings.directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(settings.frames)
    task_status.started()
    try:
        n = 0
        while True:
            path = settings.directory / f"{name}-{os.getpid()}-{n:04d}.tracemalloc"
            tracemalloc.take_snapshot().dump(str(path))
            current, peak = tracemalloc.get_traced_memory()
            log.info("node.heap.dumped", path=str(path), traced_bytes=current, peak_bytes=peak)
            n += 1
            await trio.sleep(settings.every_s)
    finally:
        tracemalloc.stop()
