"""Inbound connection slots that come back when the handshake ends, not when the swarm stops.

py-libp2p 0.8.1's swarm takes a slot of its inbound ``CapacityLimiter``
(``max_connections - min_connections`` = 250) in the task that handles an
inbound connection and releases it in that task's ``finally``. After a
successful upgrade that task waits for the *swarm* to finish (its "intentional
barrier"), so every accepted connection keeps its slot after it closes: a node
that has accepted 250 connections in its life refuses all others, and its
diallers see ``handshake failed when upgrading to secure connection``.

:class:`InboundHandshakes` stands in for that limiter. It bounds what the
limiter was for, handshakes in progress at once (a flood of raw TCP
connections that never finish a handshake), and gives the slot back as soon
as the handshake of that connection is over, whatever its outcome. The number
of live connections stays bounded by the swarm's own ``max_connections``
check, made again when a connection is registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class InboundHandshakes:
    """A stand-in for the swarm's ``_inbound_limiter``: at most ``cap`` inbound handshakes at once."""

    def __init__(self, cap: int) -> None:
        self.total_tokens = cap
        self._holding: set[trio.lowlevel.Task] = set()

    @property
    def borrowed_tokens(self) -> int:
        return len(self._holding)

    def acquire_nowait(self) -> None:
        """Take a slot for this task; ``trio.WouldBlock`` when all are taken (the swarm then hangs up)."""
        if len(self._holding) >= self.total_tokens:
            raise trio.WouldBlock
        self._holding.add(trio.lowlevel.current_task())

    def release(self) -> None:
        """The swarm's ``finally``: a no-op when the handshake already gave the slot back."""
        self._holding.discard(trio.lowlevel.current_task())

    def handshake_over(self) -> None:
        self._holding.discard(trio.lowlevel.current_task())


def install(swarm: Any, cap: int) -> InboundHandshakes:
    """Replace ``swarm``'s inbound limiter and give each slot back when its upgrade returns or fails."""
    slots = InboundHandshakes(cap)
    upgrade: Callable[..., Awaitable[Any]] = swarm.upgrade_inbound_raw_conn

    async def upgrade_inbound_raw_conn(*args: Any, **kwargs: Any) -> Any:
        try:
            return await upgrade(*args, **kwargs)
        finally:
            slots.handshake_over()

    swarm._inbound_limiter = slots
    swarm.upgrade_inbound_raw_conn = upgrade_inbound_raw_conn
    return slots
