"""node.toml: documented defaults, one-line errors naming the key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from depin_p2p.config import (
    CONFIG_FILE,
    DEFAULT_CONFIG_TOML,
    check_port_free,
    load_config,
    parse_multiaddr,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ConfigError

PEER = KeyPair.from_seed(b"\x01" * 32).peer_id


def make_home(tmp_path: Path, toml: str = DEFAULT_CONFIG_TOML) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / CONFIG_FILE).write_text(toml)
    (home / "genesis.json").write_text("{}")
    (home / "node.key").write_text("{}")
    return home


def test_defaults_load(tmp_path: Path) -> None:
    cfg = load_config(make_home(tmp_path))
    assert cfg.listen.host == "127.0.0.1"
    assert cfg.listen.port == 0
    assert cfg.bootstrap == ()
    assert cfg.api_port == 0
    assert cfg.log_format == "auto"
    assert cfg.log_file is None
    assert cfg.data_dir == tmp_path / "home" / "data"


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    home = make_home(tmp_path, "")
    empty = load_config(home)
    (home / CONFIG_FILE).write_text(DEFAULT_CONFIG_TOML)
    assert empty == load_config(home)


def test_overrides(tmp_path: Path) -> None:
    toml = f"""
[network]
listen = "/ip4/127.0.0.1/tcp/4101"
bootstrap = ["/ip4/127.0.0.1/tcp/4100/p2p/{PEER}"]
[log]
format = "json"
file = "node.log"
[ledger]
keep_versions = 0
"""
    cfg = load_config(make_home(tmp_path, toml))
    assert cfg.keep_versions == 0
    assert cfg.target_peers == 8  # the documented default
    assert cfg.listen.port == 4101
    assert cfg.bootstrap[0].peer_id == PEER
    assert cfg.log_file == tmp_path / "home" / "node.log"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[network]\nlistn = 'x'\n", "unknown key 'network.listn' (did you mean 'network.listen'?)"),
        ("[netwrk]\n", "unknown key 'netwrk' (did you mean 'network'?)"),
        ("[api]\nport = 'abc'\n", "api.port must be a int"),
        ("[api]\nport = true\n", "api.port must be a int"),
        ("[api]\nport = 70000\n", "not a TCP port"),
        ("[network]\nlisten = '/ip4/999.1.1.1/tcp/1'\n", "network.listen"),
        ("[network]\nlisten = '127.0.0.1:4000'\n", "not a multiaddr"),
        ("[network]\nbootstrap = ['/ip4/127.0.0.1/tcp/4000']\n", "needs a /p2p/<peer id>"),
        ("[network]\nbootstrap = ['/ip4/127.0.0.1/tcp/4000/p2p/0OIl']\n", "not a libp2p peer id"),
        ("[log]\nlevel = 'loud'\n", "log.level must be one of"),
        ("[log]\nformat = 'xml'\n", "log.format must be one of"),
        ("this is = = not toml", "not valid TOML"),
        ("[consensus]\nstartup_wait_epochs = -1\n", "startup_wait_epochs"),
        ("[devices]\ndriver = 'gpu'\n", "devices.driver must be one of"),
        ("[devices]\nworld_seed = 'xyz'\n", "devices.world_seed must be hex"),
        ("[devices]\nkeys = ['missing.key']\n", "devices.keys[0]"),
        ("[devices]\nkeys = [1]\n", "devices.keys[0] must be a string"),
        ("[ledger]\nkeep_versions = -1\n", "ledger.keep_versions must be between 0 and"),
        ("[ledger]\nkeep_versions = 10001\n", "ledger.keep_versions must be between 0 and"),
        ("[ledger]\nkeep = 3\n", "did you mean 'ledger.keep_versions'"),
        ("[network]\ntarget_peers = 0\n", "network.target_peers must be between 1 and 1000"),
        ("[network]\ntarget_peers = 1001\n", "network.target_peers must be between 1 and 1000"),
        ("[network]\ntarget_peers = '8'\n", "network.target_peers must be a int"),
        ("[network]\ntarget_peer = 8\n", "did you mean 'network.target_peers'"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(make_home(tmp_path, toml))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_home_file_genesis_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope")
    home = make_home(tmp_path)
    (home / "genesis.json").unlink()
    with pytest.raises(ConfigError, match="genesis file"):
        load_config(home)
    (home / "genesis.json").write_text("{}")
    (home / "node.key").unlink()
    with pytest.raises(ConfigError, match="key file"):
        load_config(home)
    (home / CONFIG_FILE).unlink()
    with pytest.raises(ConfigError, match=r"node\.toml does not exist"):
        load_config(home)


def test_multiaddr_forms() -> None:
    assert parse_multiaddr("/ip6/::1/tcp/5/p2p/" + PEER, where="x").host == "::1"
    with pytest.raises(ConfigError):
        parse_multiaddr("/ip6/127.0.0.1/tcp/5", where="x")
    with pytest.raises(ConfigError):
        parse_multiaddr("/ip4/127.0.0.1/udp/5", where="x")


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port, what="network.listen")
    check_port_free("127.0.0.1", 0, what="network.listen")


def test_first_signing_epoch() -> None:
    from depin_p2p.node import first_signing_epoch  # noqa: PLC0415

    # A new network whose processes came up after epoch 1 began may still sign epoch 1.
    assert first_signing_epoch(0, 3, 0) == 1
    assert first_signing_epoch(7, 9, 0) == 8
    # With a startup wait, the floor counts from the network's wall-clock epoch.
    assert first_signing_epoch(0, 3, 2) == 3
    assert first_signing_epoch(7, 5, 2) == 8
