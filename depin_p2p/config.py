"""Node configuration: ``node.toml`` in the node home, documented defaults, validation.

Every problem is a ConfigError whose one-line message names the file and the
key, so ``depin-p2p run`` can print it and exit 2.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import json
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depin_p2p.crypto import KeyPair, b58decode, load_key_file
from depin_p2p.errors import ConfigError

CONFIG_FILE = "node.toml"

# Written by `depin-p2p init`; also the documentation of every key.
DEFAULT_CONFIG_TOML = """\
# depin-p2p node configuration. Paths are relative to the node home.

[node]
key_file = "node.key"          # this node's Ed25519 key (depin-p2p keygen)
genesis_file = "genesis.json"  # the network's genesis; its network_id must match the store
data_dir = "data"              # LMDB ledger

[key]
passphrase_file = ""           # an encrypted key_file (keygen --encrypt): file holding its passphrase
passphrase_env = ""            # ... or the environment variable holding it ("" for neither)

[network]
listen = "/ip4/127.0.0.1/tcp/0"   # libp2p listen multiaddr (0.0.0.0: every interface); port 0 picks one
announce = []                      # addresses handed to peers, /ip4/A/tcp/P ([] : the listen addresses)
bootstrap = []                     # multiaddrs of peers to join, each ending in /p2p/<peer id>
target_peers = 8                   # connections to keep (plus the current validators, when validating)

[api]
port = 0                       # status/metrics/tx HTTP endpoint; 0 picks a free port
host = "127.0.0.1"             # any other address (0.0.0.0) opens the API beyond this machine
token_file = "api.token"       # then every request needs "Authorization: Bearer <this file's token>"

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
    announce: tuple[Multiaddr, ...] = ()
    api_host: str = "127.0.0.1"
    api_token_file: Path | None = None  # None: a loopback API, no token
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def announce_addrs(self, peer_id: str) -> tuple[str, ...]:
        """The configured announce addresses, each ending in ``/p2p/<peer_id>``."""
        return tuple(a.text if a.peer_id else f"{a.text}/p2p/{peer_id}" for a in self.announce)


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
    "key": {"passphrase_file": str, "passphrase_env": str},
    "network": {"listen": str, "announce": list, "bootstrap": list, "target_peers": int},
    "api": {"port": int, "host": str, "token_file": str},
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
    announce = _announce(net["announce"], listen, path)
    api_host, token_file = _api_host(api, home, path)
    passphrase_file, passphrase_env = _passphrase_settings(cfg["key"], home, path)
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
        announce=announce,
        api_host=api_host,
        api_token_file=token_file,
        passphrase_file=passphrase_file,
        passphrase_env=passphrase_env,
    )


def _announce(items: list[Any], listen: Multiaddr, path: Path) -> tuple[Multiaddr, ...]:
    announce = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{path}: network.announce[{i}] must be a string")
        addr = parse_multiaddr(item, where=f"{path}: network.announce[{i}]")
        if ipaddress.ip_address(addr.host).is_unspecified or addr.port == 0:
            raise ConfigError(f"{path}: network.announce[{i}] {item!r} must name a real address and port")
        announce.append(addr)
    if ipaddress.ip_address(listen.host).is_unspecified and not announce:
        raise ConfigError(
            f"{path}: network.listen {listen.text!r} is every interface: set network.announce "
            "to the addresses peers should dial"
        )
    return tuple(announce)


def _api_host(api: dict[str, Any], home: Path, path: Path) -> tuple[str, Path | None]:
    try:
        host = ipaddress.ip_address(api["host"])
    except ValueError:
        raise ConfigError(f"{path}: api.host {api['host']!r} is not an IP address") from None
    if host.is_loopback:
        return str(host), None
    if not api["token_file"]:
        raise ConfigError(f"{path}: api.host {host} opens the API beyond this machine: set api.token_file")
    token_file = home / api["token_file"]
    read_api_token(token_file, where=f"{path}: api.token_file")
    return str(host), token_file


API_TOKEN_BYTES = 32


def read_api_token(token_file: Path, *, where: str) -> str:
    """The bearer token in ``token_file`` (one line of hex); ConfigError when missing or weak."""
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: {token_file} does not exist (create it with `depin-p2p init --api-host ...`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {token_file}: {exc}") from None
    if len(token) < 2 * API_TOKEN_BYTES:
        raise ConfigError(
            f"{where}: the token in {token_file} is shorter than {2 * API_TOKEN_BYTES} characters"
        )
    return token


def _passphrase_settings(key: dict[str, Any], home: Path, path: Path) -> tuple[Path | None, str | None]:
    file, env = key["passphrase_file"], key["passphrase_env"]
    if file and env:
        raise ConfigError(f"{path}: set key.passphrase_file or key.passphrase_env, not both")
    return (home / file if file else None), (env or None)


def read_passphrase(file: Path | None, env: str | None, *, where: str) -> bytes:
    """The passphrase from ``file`` (one trailing newline dropped) or the variable ``env``.

    Raises ConfigError naming ``where`` when neither is set, the file is
    missing or unreadable, the variable is unset, or the passphrase is empty.
    """
    if file is not None:
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{where}: passphrase file {file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read passphrase file {file}: {exc.strerror}") from None
        secret = raw[:-1] if raw.endswith(b"\n") else raw
        secret = secret[:-1] if secret.endswith(b"\r") else secret
        what = f"passphrase file {file}"
    elif env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{where}: the environment variable {env} holding the passphrase is not set")
        secret, what = value.encode(), f"environment variable {env}"
    else:
        raise ConfigError(f"{where}: no passphrase source (a file or an environment variable)")
    if not secret:
        raise ConfigError(f"{where}: the {what} is empty")
    return secret


def load_node_key(config: NodeConfig) -> KeyPair:
    """The node key of ``config``, decrypted with the passphrase node.toml names when encrypted."""
    where = f"{config.home / CONFIG_FILE}: key"

    def passphrase() -> bytes:
        if config.passphrase_file is None and config.passphrase_env is None:
            raise ConfigError(
                f"key file {config.key_file} is encrypted: set key.passphrase_file or "
                f"key.passphrase_env in {config.home / CONFIG_FILE}"
            )
        return read_passphrase(config.passphrase_file, config.passphrase_env, where=where)

    return load_key_file(config.key_file, passphrase)


def toml_value(value: object) -> str:
    """A TOML literal for the strings, integers and string lists node.toml holds."""
    if isinstance(value, bool):
        raise TypeError("node.toml holds no booleans")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes as JSON for these texts
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def render_config(settings: dict[str, dict[str, object]], template: str = DEFAULT_CONFIG_TOML) -> str:
    """``template`` with the values of ``settings`` (``{section: {key: value}}``), comments kept.

    Raises KeyError for a key the template lacks (a bug of the caller).
    """
    left = {(sec, key) for sec, keys in settings.items() for key in keys}
    out, section = [], ""
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif "=" in line and not stripped.startswith("#"):
            key, _, rest = line.partition("=")
            name = key.strip()
            if name in settings.get(section, {}):
                _, hash_, comment = rest.partition("#")
                shown = toml_value(settings[section][name])
                left.discard((section, name))
                out.append(f"{key}= {shown}" + (f"  #{comment}" if hash_ else ""))
                continue
        out.append(line)
    if left:
        raise KeyError(f"not in the node.toml template: {sorted(left)}")
    return "\n".join(out) + "\n"


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
