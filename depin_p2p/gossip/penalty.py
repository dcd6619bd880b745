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


@dataclass(frozen=True, slots=True)
class PenaltyPolicy:
    """Points per rejection, leak rate, threshold and ban length (all integers)."""

    reject_points: int = 10
    severe_points: int = 100
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
        points = self.policy.severe_points if code in SEVERE_CODES else self.policy.reject_points
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
