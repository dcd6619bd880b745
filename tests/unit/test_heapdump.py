"""DEPIN_TRACEMALLOC (debug only): off unless set; when set, snapshots a later diff can read."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import trio
import trio.testing

from depin_p2p.errors import ConfigError
from depin_p2p.heapdump import HeapDumpSettings, dump_heap_snapshots, settings_from_env


def test_off_by_default() -> None:
    assert settings_from_env({}) is None
    assert settings_from_env({"DEPIN_TRACEMALLOC": ""}) is None


def test_settings_and_refusals(tmp_path: Path) -> None:
    got = settings_from_env({"DEPIN_TRACEMALLOC": str(tmp_path), "DEPIN_TRACEMALLOC_EVERY_S": "5"})
    assert got == HeapDumpSettings(tmp_path, 5.0, 1)
    for bad in ({"DEPIN_TRACEMALLOC_EVERY_S": "0"}, {"DEPIN_TRACEMALLOC_FRAMES": "x"}):
        with pytest.raises(ConfigError):
            settings_from_env({"DEPIN_TRACEMALLOC": str(tmp_path), **bad})


async def test_snapshots_are_written_periodically(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    settings = HeapDumpSettings(tmp_path / "snaps", every_s=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(dump_heap_snapshots, settings, "node-0")
        await trio.sleep(150)  # the first at once, then at 60 s and 120 s
        nursery.cancel_scope.cancel()
    files = sorted((tmp_path / "snaps").glob("node-0-*.tracemalloc"))
    assert len(files) == 3
    assert not tracemalloc.is_tracing()  # stopped with the task
    assert tracemalloc.Snapshot.load(str(files[-1])).traces is not None
