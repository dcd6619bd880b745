"""Per-peer penalty table shared by both transports. [pure: takes now_ms, never logs]

Each rejected message or request charges the forwarding peer some points;
points leak away at a constant rate. A peer whose points reach the threshold
is banned for ``ban_ms`` (the transport then disconnects it and refuses it).
The table reports the first penalty of each peer so the shell logs a reason
once per peer, not once per message.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# Frames that can only come from a broken or hostile implementation cost a
# ban at once; an invalid message might be a honest relay of a stale proof.
SEVERE_CODES = frozenset(
    {"malformed_rpc", "malformed_message", "bad_pubsub_signature", "absurd_frame_length"}
)
# Charged per item, not per message: a proof far outside any plausible time window, forwarded
# beyond the peer's tolerance (see :class:`ToleranceTable`). Many such items add up to a ban.
LIGHT_CODES = frozenset({"far_out_of_window"})


@dataclass(frozen=True, slots=True)
class PenaltyPolicy:
    """Points per rejection, leak rate, threshold and ban length (all integers)."""

    reject_points: int = 10
    severe_points: int = 100
    light_points: int = 1
    threshold: int = 100
    leak_per_second: int = 1
    ban_ms: int = 600_000
    max_peers: int = 10_000


@dataclass(frozen=True, slots=True)
class PenaltyOutcome:
    """What the shell must do after a penalty."""

    first: bool  # the first penalty of this peer since it was last clean: log the reason
    banned: bool  # newly banned by this penalty: disconnect and refuse
    score: int


@dataclass(slots=True)
class _Entry:
    score: int
    at_ms: int
    banned_until_ms: int = 0


class PenaltyTable:
    """Scores and bans by peer id. Bounded: the stalest entries go first."""

    def __init__(self, policy: PenaltyPolicy | None = None) -> None:
        self.policy = policy or PenaltyPolicy()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _leaked(self, entry: _Entry, now_ms: int) -> int:
        elapsed = max(0, now_ms - entry.at_ms)
        return max(0, entry.score - elapsed * self.policy.leak_per_second // 1000)

    def penalise(self, peer: str, code: str, now_ms: int) -> PenaltyOutcome:
        """Charge ``peer`` for ``code``: is this its first penalty, is it now banned."""
        if code in SEVERE_CODES:
            points = self.policy.severe_points
        elif code in LIGHT_CODES:
            points = self.policy.light_points
        else:
            points = self.policy.reject_points
        entry = self._entries.get(peer)
        # "First" again once a peer's record is clean: a reformed peer gets one more log line.
        first = entry is None or (self._leaked(entry, now_ms) == 0 and entry.banned_until_ms <= now_ms)
        if entry is None:
            entry = _Entry(0, now_ms)
            self._entries[peer] = entry
            while len(self._entries) > self.policy.max_peers:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(peer)
        entry.score = self._leaked(entry, now_ms) + points
        entry.at_ms = now_ms
        newly_banned = False
        if entry.score >= self.policy.threshold and entry.banned_until_ms <= now_ms:
            entry.banned_until_ms = now_ms + self.policy.ban_ms
            entry.score = 0
            newly_banned = True
        return PenaltyOutcome(first=first, banned=newly_banned, score=entry.score)

    def ban(self, peer: str, until_ms: int) -> None:
        """Ban ``peer`` until ``until_ms`` regardless of its score."""
        entry = self._entries.setdefault(peer, _Entry(0, until_ms))
        entry.banned_until_ms = max(entry.banned_until_ms, until_ms)
        self._entries.move_to_end(peer)

    def is_banned(self, peer: str, now_ms: int) -> bool:
        entry = self._entries.get(peer)
        return entry is not None and entry.banned_until_ms > now_ms

    def score(self, peer: str, now_ms: int) -> int:
        entry = self._entries.get(peer)
        return 0 if entry is None else self._leaked(entry, now_ms)


@dataclass(frozen=True, slots=True)
class TolerancePolicy:
    """How many out-of-window items a peer may forward before each further one costs it."""

    items: int = 16
    refill_per_second: int = 1
    max_peers: int = 10_000


@dataclass(slots=True)
class _Allowance:
    used: int
    at: int  # when the last unit came back, in ms x refill_per_second (exact at any rate)


class ToleranceTable:
    """Per-peer allowance of items that look like an offence one at a time but not as a habit.

    A leaky bucket per peer: each item uses one unit of ``items``, units come
    back at ``refill_per_second``; :meth:`excess` says how many of the items
    just seen were beyond the allowance (the caller charges those). Bounded:
    the stalest peers go first.
    """

    def __init__(self, policy: TolerancePolicy | None = None) -> None:
        self.policy = policy or TolerancePolicy()
        self._peers: OrderedDict[str, _Allowance] = OrderedDict()

    def excess(self, peer: str, count: int, now_ms: int) -> int:
        """Record ``count`` items from ``peer``; return how many are beyond its allowance."""
        entry = self._refilled(peer, now_ms)
        entry.used += count
        over = max(0, entry.used - self.policy.items)
        entry.used -= over
        return over

    def remaining(self, peer: str, now_ms: int) -> int:
        """How many items ``peer`` may still send before the next one is beyond its allowance."""
        return self.policy.items - self._refilled(peer, now_ms).used

    def _refilled(self, peer: str, now_ms: int) -> _Allowance:
        p = self.policy
        entry = self._peers.get(peer)
        if entry is None:
            entry = _Allowance(0, now_ms * p.refill_per_second)
            self._peers[peer] = entry
            while len(self._peers) > p.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        back = max(0, now_ms * p.refill_per_second - entry.at) // 1000
        if back:  # the clock moves on by whole units only, so no refill is lost or counted twice
            entry.used = max(0, entry.used - back)
            entry.at += back * 1000
        return entry
