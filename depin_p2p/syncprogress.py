"""How far behind the network a node is, and how fast it catches up: ``/status``'s ``sync``. [pure]

The node reports each committed epoch (synced from a peer's certificate or
decided live) with the time; the rate is the epochs committed over the last
:data:`WINDOW_MS`, measured up to now, so a stalled node's rate falls. A node
is behind when its last committed epoch is more than one epoch before the
one running (the last one is decided during the next); while behind, the
gap closes at the rate less the network's own pace (one epoch per epoch
length), which gives the ETA.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from depin_p2p.schedule import EpochSchedule

WINDOW_MS = 60_000
MS_PER_S = 1000


class SyncProgress:
    """Commit times of the last minute; :meth:`doc` is the status's ``sync`` object."""

    def __init__(self, schedule: EpochSchedule) -> None:
        self._schedule = schedule
        self._samples: deque[tuple[int, int]] = deque()  # (now_ms, epoch) per commit

    def on_commit(self, now_ms: int, epoch: int) -> None:
        self._samples.append((now_ms, epoch))
        while len(self._samples) > 2 and self._samples[0][0] < now_ms - WINDOW_MS:
            self._samples.popleft()

    def rate(self, now_ms: int) -> float | None:
        """Epochs committed per second over the window, up to ``now_ms`` (None: fewer than 2 commits)."""
        if len(self._samples) < 2:
            return None
        (t0, e0), (_, e1) = self._samples[0], self._samples[-1]
        elapsed_s = (now_ms - t0) / MS_PER_S
        return (e1 - e0) / elapsed_s if elapsed_s > 0 else None

    def doc(self, now_ms: int, last_epoch: int) -> dict[str, Any]:
        """``{"behind", "syncing", "rate_epochs_per_s", "eta_s"}`` (rate and ETA None when unknown)."""
        behind = max(0, self._schedule.epoch_at(now_ms) - 1 - last_epoch)
        rate = self.rate(now_ms)
        eta = None
        if behind > 1 and rate is not None:
            closing = rate - MS_PER_S / self._schedule.epoch_length_ms
            eta = round(behind / closing, 1) if closing > 0 else None
        return {
            "behind": behind,
            "syncing": behind > 1,
            "rate_epochs_per_s": None if rate is None else round(rate, 3),
            "eta_s": eta,
        }
