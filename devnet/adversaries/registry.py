"""The catalogue: every role by name, one module per family.

:func:`new_role` builds a fresh role object for one node (a role may keep
state, such as the votes it will replay).
"""

from __future__ import annotations

from devnet.adversaries import compute, consensus, network, radio
from devnet.adversaries.base import Role

CATALOGUE: dict[str, type[Role]] = {
    cls.name: cls for module in (consensus, radio, compute, network) for cls in module.ROLES
}

# Roles `depin-devnet run` can start on a process (python -m devnet.adversaries.proc), through the
# same hooks as in the simulator. The others need what only the simulator has (a ring's genesis
# accounts) or have not been run on processes yet.
PROCESS_ROLES: frozenset[str] = frozenset(
    {
        "equivocating-validator", "stale-replay", "non-validator-voter",
        "rssi-liar", "beacon-replay",
        "wrong-result",
        "crash-frames", "invalid-signature-flood",
    }
)


def new_role(name: str) -> Role:
    """A fresh role object for ``name`` (a key of :data:`CATALOGUE`)."""
    return CATALOGUE[name]()


def family_of(name: str) -> str:
    return CATALOGUE[name].family
