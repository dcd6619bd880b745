"""Epoch boundaries in wall time. [pure]

Epoch 1 starts at the genesis time; epoch ``e`` covers
``[genesis + (e-1)·length, genesis + e·length)``. Before the genesis time the
epoch is 0 (nothing runs yet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EpochSchedule:
    genesis_time_ms: int
    epoch_length_ms: int

    def epoch_at(self, now_ms: int) -> int:
        """The epoch running at ``now_ms`` (0 before the genesis time)."""
        if now_ms < self.genesis_time_ms:
            return 0
        return (now_ms - self.genesis_time_ms) // self.epoch_length_ms + 1

    def start_of(self, epoch: int) -> int:
        """Wall time (ms) at which ``epoch`` starts (``end_of(epoch - 1)``)."""
        return self.genesis_time_ms + (epoch - 1) * self.epoch_length_ms

    def end_of(self, epoch: int) -> int:
        return self.start_of(epoch + 1)
