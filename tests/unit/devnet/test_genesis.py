"""Devnet genesis: reproducible from a seed, loads as a genesis, devices witness each other validly."""

from __future__ import annotations

from pathlib import Path

import pytest

from depin_p2p import wire
from depin_p2p.config import load_config
from depin_p2p.errors import Reject
from depin_p2p.home import init_home
from depin_p2p.ledger.genesis import load_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import compute_genesis_changes
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.model import DeviceKind
from depin_p2p.witness import radio
from devnet.genesis import DevnetPlan, plan_devnet, write_device_keys, write_genesis
from devnet.layout import bootstrap_indices, write_layout

T0 = 1_767_225_600_000


def test_same_seed_same_devnet_other_seed_other(tmp_path: Path) -> None:
    a = plan_devnet(DevnetPlan(seed=b"s1"), genesis_time_ms=T0)
    b = plan_devnet(DevnetPlan(seed=b"s1"), genesis_time_ms=T0)
    c = plan_devnet(DevnetPlan(seed=b"s2"), genesis_time_ms=T0)
    assert a.genesis == b.genesis
    assert a.genesis != c.genesis
    assert a.network_id != c.network_id


def test_genesis_loads_and_initialises_homes(tmp_path: Path) -> None:
    plan = DevnetPlan(nodes=4, validators=3, seed=b"homes")
    net = plan_devnet(plan, genesis_time_ms=T0)
    path = tmp_path / "genesis.json"
    write_genesis(net, path)
    g = load_genesis(path)
    assert g.network_id == net.network_id
    assert len(g.validators) == 3
    assert len(g.devices) == 4 * 3 + 4
    assert sum(1 for d in g.devices if d.kind is DeviceKind.COMPUTE) == 4
    made = init_home(tmp_path / "node-0", genesis_file=path, key=net.node_keys[0])
    with LedgerStore.open(made.home / "data", readonly=True) as store:
        assert store.state_root() == made.state_root
    keys = write_device_keys(net, 0, tmp_path / "node-0" / "devices")
    assert len(keys) == 4 and all((p.stat().st_mode & 0o777) == 0o600 for p in keys)


def test_neighbours_witness_each_other_validly(tmp_path: Path) -> None:
    net = plan_devnet(DevnetPlan(nodes=4, seed=b"physics"), genesis_time_ms=T0)
    path = tmp_path / "genesis.json"
    write_genesis(net, path)
    view = MemoryLedger()
    view.commit(compute_genesis_changes(view, load_genesis(path).initial_state()), b"")
    radios = [d for d in net.devices if d.kind == "radio"]
    beaconer, others = radios[0], radios[1:]
    dev = view.get_device(beaconer.key.public_key)
    assert dev is not None
    b = radio.Beacon(
        dev.device_id, 1, 0, dev.location, dev.frequency_hz, dev.tx_power_cdbm, dev.gain_cdbi, T0
    )
    checked = radio.validate_beacon(
        wire.seal(b, beaconer.key, net.network_id), registry=view, network_id=net.network_id, epoch=1
    )
    valid, siblings = 0, 0
    for w in others:
        rep = radio.WitnessReport(
            w.key.public_key, checked.beacon_id, -12_000, 300, dev.frequency_hz, T0 + 100
        )
        env = wire.seal(rep, w.key, net.network_id)
        if w.owner_index == beaconer.owner_index:  # a node's own radios never witness each other
            with pytest.raises(Reject) as exc:
                radio.validate_witness_report(checked, env, registry=view, network_id=net.network_id)
            assert exc.value.code == "same_owner"
            siblings += 1
            continue
        radio.validate_witness_report(checked, env, registry=view, network_id=net.network_id)
        valid += 1
    assert siblings > 0
    assert valid == len(others) - siblings  # -120 dBm is plausible at every grid distance


def test_layout_homes_load_as_valid_configs(tmp_path: Path) -> None:
    net = plan_devnet(DevnetPlan(nodes=3, seed=b"layout"), genesis_time_ms=T0)
    layout = write_layout(net, tmp_path / "devnet")
    configs = [load_config(n.home) for n in layout.nodes]
    assert configs[0].bootstrap == ()
    assert [[b.peer_id for b in c.bootstrap] for c in configs[1:]] == [
        [layout.nodes[0].peer_id],
        [layout.nodes[0].peer_id, layout.nodes[1].peer_id],
    ]
    assert len({c.listen.port for c in configs} | {c.api_port for c in configs}) == 6
    assert all(len(c.device_keys) == 4 for c in configs)
    assert configs[1].world_seed == b"layout"
    with pytest.raises(FileExistsError):
        write_layout(net, tmp_path / "devnet")


def test_beyond_the_target_degree_each_node_knows_a_seed_and_its_predecessor() -> None:
    # A full mesh while everyone fits in everyone's degree (target 8: up to 9 nodes).
    assert [bootstrap_indices(i, 9) for i in range(4)] == [[], [0], [0, 1], [0, 1, 2]]
    assert bootstrap_indices(8, 9) == list(range(8))
    big = [bootstrap_indices(i, 32) for i in range(32)]
    assert big[:5] == [[], [0], [0, 1], [1, 2], [0, 3]]
    assert big[10] == [0, 9] and big[31] == [1, 30]
    assert all(len(b) <= 2 and all(j < i for j in b) for i, b in enumerate(big))  # issue 13: 2 peers
    assert bootstrap_indices(5, 6, target_peers=2) == [1, 4]


def test_a_large_layout_writes_the_few_bootstrap_peers(tmp_path: Path) -> None:
    net = plan_devnet(DevnetPlan(nodes=12, seed=b"layout-big", radios_per_node=0), genesis_time_ms=T0)
    layout = write_layout(net, tmp_path / "devnet")
    configs = [load_config(n.home) for n in layout.nodes]
    ids = [n.peer_id for n in layout.nodes]
    assert [b.peer_id for b in configs[7].bootstrap] == [ids[1], ids[6]]
    assert all(c.target_peers == 8 for c in configs)
