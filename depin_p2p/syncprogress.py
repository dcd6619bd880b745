"""How far behind a node is, and how fast it catches up: ``/status``'s ``sync``. [pure]

The node reports each committed epoch with the time and its running count
of epochs committed from a peer's certificate (rather than decided live).
``behind`` is how many epochs the node's ledger trails the clock: its last
committed epoch is more than one before the one running (the last one is
decided during the next). That alone does not mean the node is catching up:
on a loaded devnet the whole network can fall behind its clock while every
node is at the head of the chain. So ``syncing`` also needs the commits of
the last :data:`WINDOW_MS` to be mostly from peers' certificates (a node at
the head decides its epochs live); with fewer than two commits seen, it is
decided by ``behind`` alone. The rate is the epochs committed over the
window, measured up to now (a stalled node's rate falls); while syncing,
the gap closes at that rate less the network's own pace (one epoch per
epoch length), which gives the ETA.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from depin_p2p.schedule import EpochSchedule

WINDOW_MS = 60_000
MS_PER_S = 1000


class SyncProgress:
    """Commits of the last minute; :meth:`doc` is the status's ``sync`` object."""

    def __init__(self, schedule: EpochSchedule) -> None:
        self._schedule = schedule
        self._samples: deque[tuple[int, int, int]] = deque()  # (now_ms, epoch, synced so far)

    def on_commit(self, now_ms: int, epoch: int, synced_total: int = 0) -> None:
        """Epoch ``epoch`` committed at ``now_ms``; ``synced_total``: epochs synced from peers so far."""
        self._samples.append((now_ms, epoch, synced_total))
        while len(self._samples) > 2 and self._samples[0][0] < now_ms - WINDOW_MS:
            self._samples.popleft()

    def rate(self, now_ms: int) -> float | None:
        """Epochs committed per second over the window, up to ``now_ms`` (None: fewer than 2 commits)."""
        if len(self._samples) < 2:
            return None
        (t0, e0, _), (_, e1, _) = self._samples[0], self._samples[-1]
        elapsed_s = (now_ms - t0) / MS_PER_S
        return (e1 - e0) / elapsed_s if elapsed_s > 0 else None

    def _mostly_synced(self) -> bool | None:
        """Whether most commits in the window came from peers' certificates (None: too few)."""
        if len(self._samples) < 2:
            return None
        (_, e0, s0), (_, e1, s1) = self._samples[0], self._samples[-1]
        return 2 * (s1 - s0) > e1 - e0

    def doc(self, now_ms: int, last_epoch: int) -> dict[str, Any]:
        """``{"behind", "syncing", "rate_epochs_per_s", "eta_s"}`` (rate and ETA None when unknown)."""
        behind = max(0, self._schedule.epoch_at(now_ms) - 1 - last_epoch)
        rate = self.rate(now_ms)
        synced = self._mostly_synced()
        syncing = behind > 1 and synced is not False
        eta = None
        if syncing and rate is not None:
            closing = rate - MS_PER_S / self._schedule.epoch_length_ms
            eta = round(behind / closing, 1) if closing > 0 else None
        return {
            "behind": behind,
            "syncing": syncing,
            "rate_epochs_per_s": None if rate is None else round(rate, 3),
            "eta_s": eta,
        }
