"""A devnet directory: the genesis, and one node home per node with its ports and devices.

::

    DIR/genesis.json
    DIR/node-0/{node.toml, node.key, genesis.json, data/, devices/*.key, node.log}
    ...

Each node listens on 127.0.0.1 at a free port chosen now. While the devnet
is no larger than the nodes' target degree plus one, each node bootstraps to
every earlier node (node 0 to nobody): a full mesh. Beyond that each node
knows only two: one of the two seeds (nodes 0 and 1, by its index's parity)
and the node just before it (:func:`bootstrap_indices`), and finds the rest
through peer exchange. Every
node's API port is chosen now too, so the devnet tools know where to read
each node's status.

Ports are chosen so that nobody takes them between now and the moment the
node binds them (:func:`reserve_ports`). Binding port 0 and closing the
socket again (the obvious way) is a race: the port comes from the kernel's
ephemeral range, and the kernel hands it to the next program that binds
port 0 or dials out before our node starts (a 16-node devnet on a busy
machine failed that way: ``api.port … already in use``). Instead ports come
from below the ephemeral range, where the kernel never allocates on its
own, and each is reserved in a machine-wide ledger (a JSON file under the
temp directory, one per user, updated under ``flock``) for :data:`RESERVATION_MS`, so two
devnets laid out at once never pick the same one. A port is taken only if
it is bindable at that moment, which skips ports bound by running nodes.
Only a program binding that very port number by hand can still collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from depin_p2p.home import init_home
from devnet.genesis import Devnet, write_device_keys, write_genesis

HOST = "127.0.0.1"
RESERVATION_MS = 600_000  # a node binds its ports within seconds of start; ten minutes is ample
PORT_SPAN = 12_288  # how many ports below the ephemeral range devnets use
NETNS_P2P_PORT = 4001  # a node alone in its network namespace has every port to itself
NETNS_API_PORT = 8080
LEDGER_NAME = "depin-devnet-ports-{uid}.json"  # per user: no one else's file to be locked out of
SEEDS = 2  # beyond the target degree, nodes 0 and 1 are everyone's bootstrap peers
DEFAULT_TARGET_PEERS = 8  # node.toml network.target_peers


def bootstrap_indices(index: int, nodes: int, target_peers: int = DEFAULT_TARGET_PEERS) -> list[int]:
    """The earlier nodes node ``index`` bootstraps to.

    Every earlier node while ``nodes <= target_peers + 1`` (a full mesh:
    everyone is within everyone's degree); beyond it one seed (node
    ``index % 2``) and the node just before, so no node knows more than two,
    the chain of predecessors connects everyone, and each seed takes about
    half the network's first dials.
    """
    if nodes <= target_peers + 1:
        return list(range(index))
    return sorted({index % SEEDS, index - 1} - {index, -1})


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _candidate_range() -> range:
    low, high = ephemeral_range()
    if low - 1_024 >= 1_024:
        return range(max(1_024, low - PORT_SPAN), low)
    return range(high + 1, min(65_536, high + 1 + PORT_SPAN))  # an unusual range that starts low


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _ledger() -> Iterator[dict[str, int]]:
    """The machine-wide reservations (port -> expiry in Unix ms), locked while in use."""
    path = Path(tempfile.gettempdir()) / LEDGER_NAME.format(uid=os.getuid())
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            try:
                held = {str(k): int(v) for k, v in json.loads(f.read() or "{}").items()}
            except (ValueError, AttributeError, TypeError):
                held = {}  # a corrupt ledger only loses reservations, never ports
            yield held
            f.seek(0)
            f.truncate()
            f.write(json.dumps(held))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reserve_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that no one else will be handed meanwhile.

    Raises OSError if no such port is left in the range.
    """
    candidates = _candidate_range()
    now = time.time_ns() // 1_000_000  # Unix ms: the ledger is shared by every process
    chosen: list[int] = []
    with _ledger() as held:
        for key, until in list(held.items()):
            if until <= now:
                del held[key]
        start = random.randrange(len(candidates))
        for i in range(len(candidates)):
            port = candidates[(start + i) % len(candidates)]
            if str(port) in held or not _bindable(port):
                continue
            chosen.append(port)
            held[str(port)] = now + RESERVATION_MS
            if len(chosen) == count:
                return chosen
    raise OSError(f"no free port left in {candidates.start}-{candidates.stop - 1}")


def free_port() -> int:
    """One TCP port on 127.0.0.1, reserved as by :func:`reserve_ports`."""
    return reserve_ports(1)[0]


@dataclass(frozen=True, slots=True)
class NodeLayout:
    index: int
    home: Path
    p2p_port: int
    api_port: int
    peer_id: str
    address: str
    host: str = HOST  # where it listens for peers (its namespace's address under `depin-devnet run`)

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{self.peer_id}"


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path
    genesis_file: Path
    nodes: tuple[NodeLayout, ...]


def node_toml(
    *,
    p2p_port: int,
    api_port: int,
    bootstrap: list[str],
    device_keys: list[str],
    world_seed: str,
    host: str = HOST,
) -> str:
    keys = ", ".join(f'"{k}"' for k in device_keys)
    boot = ", ".join(f'"{b}"' for b in bootstrap)
    return f"""\
# Written by depin-devnet. See `depin-p2p init` for the documented defaults.
[network]
listen = "/ip4/{host}/tcp/{p2p_port}"
bootstrap = [{boot}]

[api]
port = {api_port}

[log]
format = "json"
level = "info"
file = "node.log"

[devices]
keys = [{keys}]
driver = "simulated"
world_seed = "{world_seed}"
"""


def write_layout(devnet: Devnet, root: Path, *, hosts: Sequence[str] | None = None) -> Layout:
    """Write the genesis and every node home under ``root`` (which must be empty or absent).

    ``hosts``: one listen address per node, each in a network namespace of its own
    (so every node takes the same fixed ports, :data:`NETNS_P2P_PORT` and
    :data:`NETNS_API_PORT`); None: every node on 127.0.0.1 at reserved ports.

    Raises:
        ConfigError: from ``init_home`` when a home cannot be created.
        FileExistsError: when ``root`` exists and is not empty.
    """
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    genesis_file = root / "genesis.json"
    write_genesis(devnet, genesis_file)
    world_seed = devnet.plan.seed.hex()
    nodes: list[NodeLayout] = []
    count = len(devnet.node_keys)
    ports = reserve_ports(2 * count) if hosts is None else [NETNS_P2P_PORT, NETNS_API_PORT] * count
    for i, key in enumerate(devnet.node_keys):
        home = root / f"node-{i}"
        p2p_port, api_port = ports[2 * i], ports[2 * i + 1]
        host = HOST if hosts is None else hosts[i]
        device_paths = write_device_keys(devnet, i, home / "devices")
        # A full mesh while small; then a few seeds, and peer exchange does the rest (the peer
        # manager keeps direct connections to validators and dials providers for challenges).
        bootstrap = [nodes[j].multiaddr for j in bootstrap_indices(i, len(devnet.node_keys))]
        config = node_toml(
            p2p_port=p2p_port,
            api_port=api_port,
            bootstrap=bootstrap,
            device_keys=[str(p.relative_to(home)) for p in device_paths],
            world_seed=world_seed,
            host=host,
        )
        init_home(home, genesis_file=genesis_file, key=key, force=True, config_toml=config)
        nodes.append(NodeLayout(i, home, p2p_port, api_port, key.peer_id, key.address, host))
    return Layout(root, genesis_file, tuple(nodes))
