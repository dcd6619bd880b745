"""One error hierarchy for the whole node.

Only boundary tasks (one per peer or stream) catch these, and only these.
``ValidationError`` carries a stable machine-readable ``code`` (snake_case),
which is what metrics count and what users see.
"""

from __future__ import annotations

import re

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class DepinError(Exception):
    """Base of every error this project raises on purpose."""


class InternalError(DepinError):
    """A broken invariant of ours: crash loudly, never swallow."""


class CodecError(DepinError):
    """Bytes that are not a valid message (malformed, oversized, unknown type...)."""


class ValidationError(DepinError):
    """A message that decodes but must not be accepted.

    Attributes:
        code: stable snake_case reason, e.g. ``rssi_above_fspl_bound``.
        detail: free-form human explanation; never parsed by code.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        if not _CODE_RE.match(code):
            raise InternalError(f"validation code {code!r} is not snake_case")
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


class Ignore(ValidationError):
    """Drop the message, no penalty (duplicate, too early, not interesting)."""


class Reject(ValidationError):
    """Drop the message and penalise the peer that sent it."""


class ConsensusError(DepinError):
    """A consensus-level failure that is not a validation of one message."""


class StorageError(DepinError):
    """The ledger store cannot do what was asked (corrupt, full disk, locked...)."""


class TransportError(DepinError):
    """A network failure, wrapping libp2p/trio stream errors at the gossip boundary."""


class ConfigError(DepinError):
    """Bad user configuration or input: one clear line for the user, exit status 2."""
