"""A devnet directory: the genesis, and one node home per node with its ports and devices.

::

    DIR/genesis.json
    DIR/node-0/{node.toml, node.key, genesis.json, data/, devices/*.key, node.log}
    ...

Each node listens on 127.0.0.1 at a free port chosen now and bootstraps to
every earlier node (node 0 to nobody), so a devnet is a full mesh; every
node's API port is chosen now too, so the devnet tools know where to read
each node's status.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from depin_p2p.home import init_home
from devnet.genesis import Devnet, write_device_keys, write_genesis

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class NodeLayout:
    index: int
    home: Path
    p2p_port: int
    api_port: int
    peer_id: str
    address: str

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{HOST}/tcp/{self.p2p_port}/p2p/{self.peer_id}"


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path
    genesis_file: Path
    nodes: tuple[NodeLayout, ...]


def node_toml(
    *, p2p_port: int, api_port: int, bootstrap: list[str], device_keys: list[str], world_seed: str
) -> str:
    keys = ", ".join(f'"{k}"' for k in device_keys)
    boot = ", ".join(f'"{b}"' for b in bootstrap)
    return f"""\
# Written by depin-devnet. See `depin-p2p init` for the documented defaults.
[network]
listen = "/ip4/{HOST}/tcp/{p2p_port}"
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


def write_layout(devnet: Devnet, root: Path) -> Layout:
    """Write the genesis and every node home under ``root`` (which must be empty or absent).

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
    for i, key in enumerate(devnet.node_keys):
        home = root / f"node-{i}"
        p2p_port, api_port = free_port(), free_port()
        device_paths = write_device_keys(devnet, i, home / "devices")
        # Every node dials every earlier one: a full mesh, so validators peer directly
        # and direct requests (compute challenges, sync) reach any node.
        bootstrap = [n.multiaddr for n in nodes]
        config = node_toml(
            p2p_port=p2p_port,
            api_port=api_port,
            bootstrap=bootstrap,
            device_keys=[str(p.relative_to(home)) for p in device_paths],
            world_seed=world_seed,
        )
        init_home(home, genesis_file=genesis_file, key=key, force=True, config_toml=config)
        nodes.append(NodeLayout(i, home, p2p_port, api_port, key.peer_id, key.address))
    return Layout(root, genesis_file, tuple(nodes))
