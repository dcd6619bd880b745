"""Node configuration: ``node.toml`` in the node home, documented defaults, validation.

Every problem is a ConfigError whose one-line message names the file and the
key, so ``depin-p2p run`` can print it and exit 2.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depin_p2p.crypto import b58decode
from depin_p2p.errors import ConfigError

CONFIG_FILE = "node.toml"

# Written by `depin-p2p init`; also the documentation of every key.
DEFAULT_CONFIG_TOML = """\
# depin-p2p node configuration. Paths are relative to the node home.

[node]
key_file = "node.key"          # this node's Ed25519 key (depin-p2p keygen)
genesis_file = "genesis.json"  # the network's genesis; its network_id must match the store
data_dir = "data"              # LMDB ledger

[network]
listen = "/ip4/127.0.0.1/tcp/0"   # libp2p listen multiaddr; port 0 picks a free port
bootstrap = []                     # multiaddrs of peers to join, each ending in /p2p/<peer id>
target_peers = 8                   # connections to keep (plus the current validators, when validating)

[api]
port = 0                       # local status/metrics HTTP endpoint on 127.0.0.1; 0 picks a free port

[log]
format = "auto"                # auto (human on a terminal, JSON otherwise) | human | json
level = "info"                 # debug | info | warning | error
file = ""                      # also write JSON logs to this file when set

[consensus]
startup_wait_epochs = 0        # epochs to observe before signing after an empty or restored data dir

[devices]
keys = []                      # key files of the devices this node drives (each registered in the ledger)
driver = "simulated"           # simulated (seeded world model) | local (real compute on this machine)
world_seed = ""                # seed of the simulated world, hex; "" derives it from the network id

[ledger]
keep_versions = 4              # past epochs whose Merkle tree is kept for proofs (0: only the latest)
"""

MAX_KEEP_VERSIONS = 10_000
MAX_TARGET_PEERS = 1_000  # a day of 10 s epochs; each version keeps its changed tree records
LOG_FORMATS = ("auto", "human", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEVICE_DRIVERS = ("simulated", "local")


@dataclass(frozen=True, slots=True)
class Multiaddr:
    """The subset of multiaddrs a node listens on or dials: ip4/ip6 + tcp [+ p2p]."""

    host: str
    port: int
    peer_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class NodeConfig:
    home: Path
    key_file: Path
    genesis_file: Path
    data_dir: Path
    listen: Multiaddr
    bootstrap: tuple[Multiaddr, ...]
    api_port: int
    log_format: str
    log_level: str
    log_file: Path | None
    startup_wait_epochs: int
    device_keys: tuple[Path, ...] = ()
    device_driver: str = "simulated"
    world_seed: bytes = b""
    keep_versions: int = 4
    target_peers: int = 8
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def parse_multiaddr(text: str, *, where: str, need_peer_id: bool = False) -> Multiaddr:
    """Parse ``/ip4/A/tcp/P[/p2p/ID]`` or ``/ip6/A/tcp/P[/p2p/ID]``.

    Raises ConfigError naming ``where`` on anything else.
    """
    parts = text.split("/")
    bad = ConfigError(f"{where}: {text!r} is not a multiaddr like /ip4/127.0.0.1/tcp/4001[/p2p/<peer id>]")
    if len(parts) not in (5, 7) or parts[0] != "" or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        raise bad
    try:
        ip = ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError:
        raise bad from None
    if (parts[1] == "ip4") != (ip.version == 4) or not 0 <= port <= 65535:
        raise bad
    peer_id = None
    if len(parts) == 7:
        if parts[5] != "p2p":
            raise bad
        peer_id = parts[6]
        try:
            decoded = b58decode(peer_id)
        except ValueError:
            decoded = b""
        if len(decoded) < 10:  # an identity multihash of an Ed25519 key is 38 bytes
            raise ConfigError(f"{where}: {peer_id!r} is not a libp2p peer id")
    if need_peer_id and peer_id is None:
        raise ConfigError(f"{where}: {text!r} needs a /p2p/<peer id> suffix")
    return Multiaddr(str(ip), port, peer_id, text)


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "node": {"key_file": str, "genesis_file": str, "data_dir": str},
    "network": {"listen": str, "bootstrap": list, "target_peers": int},
    "api": {"port": int},
    "log": {"format": str, "level": str, "file": str},
    "consensus": {"startup_wait_epochs": int},
    "devices": {"keys": list, "driver": str, "world_seed": str},
    "ledger": {"keep_versions": int},
}


def _unknown(name: str, known: list[str], path: Path) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{path}: unknown key {name!r}{hint}")


def _merged(path: Path, user: dict[str, Any]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {
        section: dict(values) for section, values in tomllib.loads(DEFAULT_CONFIG_TOML).items()
    }
    for section, values in user.items():
        if section not in _SCHEMA:
            raise _unknown(section, list(_SCHEMA), path)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in _SCHEMA[section]:
                raise _unknown(name, [f"{section}.{k}" for k in _SCHEMA[section]], path)
            expected = _SCHEMA[section][key]
            if type(value) is bool or not isinstance(value, expected):
                kind = expected.__name__ if isinstance(expected, type) else "value"
                raise ConfigError(f"{path}: {name} must be a {kind}, got {value!r}")
            merged[section][key] = value
    return merged


def load_config(home: Path) -> NodeConfig:
    """Read and validate ``home/node.toml`` (defaults for anything not set).

    Raises ConfigError for a missing home or file, unreadable or invalid TOML,
    an unknown key, a wrong type, a bad multiaddr, level or format, or a
    missing key or genesis file.
    """
    if not home.is_dir():
        raise ConfigError(f"node home {home} does not exist (create it with `depin-p2p init`)")
    path = home / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (create the home with `depin-p2p init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        user = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return config_from_dict(home, user, path)


def config_from_dict(home: Path, user: dict[str, Any], path: Path) -> NodeConfig:
    """Validate a parsed config (see :func:`load_config`)."""
    cfg = _merged(path, user)
    node, net, api, log = cfg["node"], cfg["network"], cfg["api"], cfg["log"]
    listen = parse_multiaddr(net["listen"], where=f"{path}: network.listen")
    bootstrap = []
    for i, item in enumerate(net["bootstrap"]):
        if not isinstance(item, str):
            raise ConfigError(f"{path}: network.bootstrap[{i}] must be a string")
        bootstrap.append(parse_multiaddr(item, where=f"{path}: network.bootstrap[{i}]", need_peer_id=True))
    target_peers = net["target_peers"]
    if not 1 <= target_peers <= MAX_TARGET_PEERS:
        raise ConfigError(f"{path}: network.target_peers must be between 1 and {MAX_TARGET_PEERS}")
    if not 0 <= api["port"] <= 65535:
        raise ConfigError(f"{path}: api.port {api['port']} is not a TCP port")
    if log["format"] not in LOG_FORMATS:
        raise ConfigError(f"{path}: log.format must be one of {', '.join(LOG_FORMATS)}")
    if log["level"] not in LOG_LEVELS:
        raise ConfigError(f"{path}: log.level must be one of {', '.join(LOG_LEVELS)}")
    wait = cfg["consensus"]["startup_wait_epochs"]
    if wait < 0:
        raise ConfigError(f"{path}: consensus.startup_wait_epochs must be ≥ 0")
    devices = cfg["devices"]
    device_keys = []
    for i, item in enumerate(devices["keys"]):
        if not isinstance(item, str):
            raise ConfigError(f"{path}: devices.keys[{i}] must be a string")
        if not (home / item).is_file():
            raise ConfigError(f"{path}: devices.keys[{i}]: {home / item} does not exist")
        device_keys.append(home / item)
    if devices["driver"] not in DEVICE_DRIVERS:
        raise ConfigError(f"{path}: devices.driver must be one of {', '.join(DEVICE_DRIVERS)}")
    try:
        world_seed = bytes.fromhex(devices["world_seed"])
    except ValueError:
        raise ConfigError(f"{path}: devices.world_seed must be hex") from None
    keep_versions = cfg["ledger"]["keep_versions"]
    if not 0 <= keep_versions <= MAX_KEEP_VERSIONS:
        raise ConfigError(f"{path}: ledger.keep_versions must be between 0 and {MAX_KEEP_VERSIONS}")
    key_file, genesis_file = home / node["key_file"], home / node["genesis_file"]
    if not genesis_file.is_file():
        raise ConfigError(f"{path}: genesis file {genesis_file} does not exist")
    if not key_file.exists():
        raise ConfigError(f"{path}: key file {key_file} does not exist")
    return NodeConfig(
        home=home,
        key_file=key_file,
        genesis_file=genesis_file,
        data_dir=home / node["data_dir"],
        listen=listen,
        bootstrap=tuple(bootstrap),
        api_port=api["port"],
        log_format=log["format"],
        log_level=log["level"],
        log_file=home / log["file"] if log["file"] else None,
        startup_wait_epochs=wait,
        device_keys=tuple(device_keys),
        device_driver=devices["driver"],
        world_seed=world_seed,
        keep_versions=keep_versions,
        target_peers=target_peers,
    )


def check_port_free(host: str, port: int, *, what: str) -> None:
    """Raise ConfigError if ``host:port`` cannot be bound (port 0 always can)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{what}: port {port} on {host} is already in use") from None
            raise ConfigError(f"{what}: cannot listen on {host}:{port}: {exc.strerror}") from None
