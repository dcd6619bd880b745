"""When a silent peer counts as gone: the ping loop's policy. [pure: takes times in ms, never sleeps]

A frozen peer (SIGSTOP, a hung process) never closes its connection, so the
transport pings every peer that has been quiet for a while and drops one
that stops answering. On a CPU-starved machine the danger is the other way
round: our own event loop runs late, reads a ping answer that came back in
time only after the deadline, and drops an honest, live peer. So:

- the ping timeout grows with the lag our own loop showed recently (how late
  a periodic timer fired): ``timeout + lag_factor * recent lag``, capped;
- a round of pings during which our own loop stalled (one lag sample of at
  least ``stall_ms`` ending after the round began, or a round that overran
  its own timeout) judges nobody: it says nothing about the peers;
- a peer is dropped only after ``failures`` consecutive missed pings.

Rounds start every ``interval`` (a round that waits out a timeout is followed
by the next at once), so on an unloaded machine a frozen peer is dropped after
about ``failures * max(interval, timeout)`` (3 * 3 s).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """Ping cadence and tolerance, all in integer milliseconds."""

    interval_ms: int = 1_500
    timeout_ms: int = 3_000
    max_timeout_ms: int = 30_000
    lag_factor: int = 4
    failures: int = 3  # consecutive missed pings before a peer is dropped
    stall_ms: int = 1_000  # a lag this large means our loop, not the peer, was frozen
    window_ms: int = 30_000  # how far back the recent lag looks
    max_samples: int = 1_024


class LoopLag:
    """Recent lag samples of our own event loop: ``(when measured, how late)`` in ms."""

    def __init__(self, policy: LivenessPolicy | None = None) -> None:
        self.policy = policy or LivenessPolicy()
        self._samples: deque[tuple[int, int]] = deque(maxlen=self.policy.max_samples)
        # The samples that may still be the window's largest, lags decreasing: ``recent_ms`` is
        # asked on every frame read, so it must not scan the window.
        self._peaks: deque[tuple[int, int]] = deque()

    def record(self, at_ms: int, lag_ms: int) -> None:
        """One sample: a timer due ``lag_ms`` before ``at_ms`` fired at ``at_ms``."""
        sample = (at_ms, max(0, lag_ms))
        self._samples.append(sample)
        while self._samples and self._samples[0][0] < at_ms - self.policy.window_ms:
            self._samples.popleft()
        while self._peaks and self._peaks[-1][1] <= sample[1]:
            self._peaks.pop()
        self._peaks.append(sample)
        while self._peaks[0][0] < self._samples[0][0]:  # only what ``_samples`` still holds
            self._peaks.popleft()

    def recent_ms(self, now_ms: int) -> int:
        """The largest lag measured in the last ``window_ms``."""
        since = now_ms - self.policy.window_ms
        for at, lag in self._peaks:
            if at >= since:
                return lag
        return 0

    def timeout_ms(self, now_ms: int) -> int:
        """How long to wait for a ping answer now."""
        p = self.policy
        return min(p.max_timeout_ms, p.timeout_ms + p.lag_factor * self.recent_ms(now_ms))

    def round_is_judgeable(self, started_ms: int, ended_ms: int, timeout_ms: int) -> bool:
        """May a round of pings from ``started_ms`` to ``ended_ms`` count misses against peers?

        Not when our loop stalled during it: a lag sample of at least
        ``stall_ms`` measured since it began, or the round itself overran
        its timeout by ``stall_ms`` (plus the one second a stream reset may take).
        """
        if ended_ms - started_ms > timeout_ms + 1_000 + self.policy.stall_ms:
            return False
        return not any(at >= started_ms and lag >= self.policy.stall_ms for at, lag in self._samples)


class MissedPings:
    """Consecutive missed pings per peer; says when a peer is gone."""

    def __init__(self, policy: LivenessPolicy | None = None) -> None:
        self.policy = policy or LivenessPolicy()
        self._missed: dict[str, int] = {}

    def answered(self, peer: str) -> None:
        self._missed.pop(peer, None)

    def missed(self, peer: str) -> bool:
        """Count one missed ping; True when ``peer`` has now missed ``failures`` in a row (reset then)."""
        n = self._missed.get(peer, 0) + 1
        if n >= self.policy.failures:
            self._missed.pop(peer, None)
            return True
        self._missed[peer] = n
        return False

    def count(self, peer: str) -> int:
        return self._missed.get(peer, 0)

    def forget_except(self, peers: set[str] | frozenset[str]) -> None:
        """Drop the records of peers no longer connected."""
        for peer in [p for p in self._missed if p not in peers]:
            del self._missed[peer]
