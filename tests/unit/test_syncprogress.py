"""Sync progress (issue 17): epochs behind, catch-up rate and ETA, and how `status` prints them."""

from __future__ import annotations

from depin_p2p.cli import format_status, format_sync
from depin_p2p.schedule import EpochSchedule
from depin_p2p.syncprogress import WINDOW_MS, SyncProgress

SCHEDULE = EpochSchedule(genesis_time_ms=0, epoch_length_ms=2_000)  # 0.5 epochs/s of network pace


def test_a_node_behind_reports_its_gap_rate_and_eta() -> None:
    sync = SyncProgress(SCHEDULE)
    now = 200_000  # epoch 101 running: the network has decided up to 100 (or 99)
    assert sync.doc(now, 0) == {"behind": 100, "syncing": True, "rate_epochs_per_s": None, "eta_s": None}
    for i in range(11):  # 40 epochs in 10 s, one sample per second
        sync.on_commit(now - 10_000 + i * 1_000, 4 * i)
    doc = sync.doc(now, 40)
    assert doc["behind"] == 60 and doc["syncing"]
    assert doc["rate_epochs_per_s"] == 4.0
    assert doc["eta_s"] == round(60 / (4.0 - 0.5), 1)
    assert format_sync(doc) == "60 epochs behind, catching up at 4 epochs/s, ETA 17 s"


def test_a_stalled_node_has_no_eta_and_a_live_one_is_up_to_date() -> None:
    sync = SyncProgress(SCHEDULE)
    sync.on_commit(0, 1)
    sync.on_commit(1_000, 2)
    doc = sync.doc(100_000, 2)  # nothing since: the rate falls with time, below the network's pace
    assert doc["syncing"] and doc["eta_s"] is None and doc["rate_epochs_per_s"] < 0.5
    assert "ETA unknown" in format_sync(doc)
    live = SyncProgress(SCHEDULE)
    for e in range(1, 40):
        live.on_commit(e * 2_000 + 500, e - 1)
    now = 40 * 2_000 - 1  # epoch 40 running: 39 is being decided, 38 is the last committed
    assert live.doc(now, 38)["behind"] == 1 and not live.doc(now, 38)["syncing"]
    assert format_sync(live.doc(now, 38)) == "following (1 epoch to decide)"
    assert format_sync(live.doc(now, 39)) == "up to date"
    assert len(live._samples) <= WINDOW_MS // 2_000 + 2


def test_status_prints_the_sync_line() -> None:
    doc = {"sync": {"behind": 7, "syncing": True, "rate_epochs_per_s": 1.5, "eta_s": 7.0}}
    assert "sync        7 epochs behind, catching up at 1.5 epochs/s, ETA 7 s" in format_status(doc)
    assert not any(line.startswith("sync") for line in format_status({}))
