"""Manifests: every key checked before anything runs; a bad one is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.manifest import ManifestError, load_manifest, parse_manifest

GOOD = """
name = "partition"
[network]
nodes = 4
validators = 4
stake = 10000
epoch_seconds = 2
epochs = 12
seed = 7

[devices]
radios_per_node = 2
compute = [0, 2]

[[perturbation]]
at_epoch = 4
action = "partition"
groups = [[0, 1], [2, 3]]

[[perturbation]]
at_epoch = 7
action = "heal"

[[perturbation]]
at_epoch = 8
action = "kill"
node = 1

[[perturbation]]
at_epoch = 9
action = "restart"
node = 1

[[perturbation]]
at_epoch = 3
action = "transfer"
node = 0
to = 2
amount = "1.5"

[[adversary]]
role = "equivocating-validator"
node = 3
from_epoch = 2
"""


def test_a_good_manifest_parses_in_epoch_order() -> None:
    m = parse_manifest(GOOD)
    assert m.name == "partition"
    assert m.network.nodes == 4 and m.network.epochs == 12 and m.network.seed == 7
    assert m.network.stake_micro == (10_000_000_000,) * 4
    assert m.devices.compute_nodes == (0, 2)
    assert [p.action for p in m.perturbations] == ["transfer", "partition", "heal", "kill", "restart"]
    assert m.perturbations[0].amount_micro == 1_500_000
    assert m.perturbations[1].groups == ((0, 1), (2, 3))
    assert m.adversaries[0].role == "equivocating-validator"
    assert m.needs_link_cuts()
    assert m.sim_only_reason() is None


def test_defaults_and_late_joiners() -> None:
    m = parse_manifest(
        '[network]\nnodes = 5\nepochs = 6\n[[perturbation]]\nat_epoch = 3\naction = "join"\nnode = 4\n'
    )
    assert m.network.validators == 5 and m.network.epoch_seconds == 10.0
    assert m.devices.compute_nodes == (0, 1, 2, 3, 4)
    assert m.late_joiners() == frozenset({4})
    assert not m.needs_link_cuts()


def test_links_make_a_manifest_sim_only() -> None:
    m = parse_manifest("[network]\nnodes = 4\nepochs = 3\n[links]\ndelay_ms = 10\nloss = 0.01\n")
    reason = m.sim_only_reason()
    assert reason is not None and "netem" in reason


def test_explicit_cells() -> None:
    m = parse_manifest('[network]\nnodes = 2\nepochs = 2\n[devices]\ncells = ["8c283082a1a9bff"]\n')
    assert m.devices.cells == (int("8c283082a1a9bff", 16),)


N = "[network]\nnodes = 4\nepochs = 3\n"
BAD = [
    ("[network]\nnodes = 4\nepochs = 3\nbogus = 1\n", "network.bogus: unknown key"),
    ("[network]\nnodes = 4\nepochs = 3\n[colour]\n", "manifest.colour: unknown key"),
    ('[network]\nnodes = "4"\nepochs = 3\n', "network.nodes: must be an integer, not a string"),
    ("[network]\nnodes = true\nepochs = 3\n", "network.nodes: must be an integer, not a boolean"),
    ("[network]\nnodes = 0\nepochs = 3\n", "network.nodes: must be in [1, 1000], got 0"),
    ("[network]\nnodes = 4\n", "network.epochs: missing"),
    ("name = 1\n[network]\nnodes = 4\nepochs = 3\n", "name: must be a non-empty string"),
    ("[devices]\n", "network: missing"),
    ("[network]\nnodes = 4\nvalidators = 5\nepochs = 3\n", "network.validators: must be in [1, 4], got 5"),
    ("[network]\nnodes = 4\nepochs = 3\nstake = [1, 2]\n", "network.stake: lists 2 stakes for 4 validators"),
    ("[network]\nnodes = 4\nepochs = 3\nstake = 0.0000001\n", "network.stake: must be a positive amount"),
    (N + "epoch_seconds = 0.5\n", "network.epoch_seconds: must be in [1, 86400]"),
    (N + "[devices]\ncompute = [4]\n", "devices.compute[0]: node 4 does not exist"),
    ('[network]\nnodes = 4\nepochs = 3\n[devices]\ncells = ["zz"]\n', "devices.cells[0]: not an H3 cell"),
    ("[network]\nnodes = 4\nepochs = 3\n[links]\nloss = 2\n", "links.loss: must be in [0, 1], got 2"),
    (
        '[network]\nnodes = 4\nepochs = 3\n[[perturbation]]\nat_epoch = 2\naction = "explode"\n',
        "perturbation[0].action: must be one of",
    ),
    (
        '[network]\nnodes = 4\nepochs = 3\n[[perturbation]]\nat_epoch = 2\naction = "kill"\nnode = 9\n',
        "perturbation[0].node: node 9 does not exist (nodes are 0..3)",
    ),
    (
        '[network]\nnodes = 4\nepochs = 3\n[[perturbation]]\nat_epoch = 2\naction = "kill"\n',
        "perturbation[0].node: missing (a kill needs it)",
    ),
    (
        '[network]\nnodes = 4\nepochs = 3\n[[perturbation]]\nat_epoch = 5\naction = "kill"\nnode = 1\n',
        "perturbation[0].at_epoch: must be in [1, 3], got 5",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[perturbation]]\nat_epoch = 2\naction = "partition"\n'
        "groups = [[0, 1], [1, 5]]\n",
        "perturbation[0].groups[1][1]: node 5 does not exist",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[perturbation]]\nat_epoch = 2\naction = "partition"\n'
        "groups = [[0, 1], [1, 2]]\n",
        "perturbation[0].groups: node 1 is in two groups",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[perturbation]]\nat_epoch = 2\naction = "heal"\n',
        "heal without a partition before it",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[perturbation]]\nat_epoch = 2\naction = "restart"\nnode = 1\n',
        "node 1 is up then; restart needs it down",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[perturbation]]\nat_epoch = 2\naction = "kill"\nnode = 1\n'
        '[[perturbation]]\nat_epoch = 3\naction = "transfer"\nnode = 1\nto = 0\namount = 1\n',
        "node 1 is down then; transfer needs it up or disconnected",
    ),
    (
        '[network]\nnodes = 4\nepochs = 9\n[[adversary]]\nrole = "dragon"\nnode = 1\n',
        "adversary[0].role: unknown role 'dragon'",
    ),
    (
        '[network]\nnodes = 4\nvalidators = 2\nepochs = 9\n[[adversary]]\nrole = "equivocating-validator"\n'
        "node = 3\n",
        "adversary[0].node: node 3 is not a validator",
    ),
    ("[network\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "needle"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_manifest_is_one_line_naming_the_key(text: str, needle: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source="m.toml")
    message = str(info.value)
    assert message.startswith("m.toml: ")
    assert needle in message, message
    assert "\n" not in message


def test_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="No such file"):
        load_manifest(tmp_path / "nope.toml")


SHIPPED = sorted((Path(__file__).resolve().parents[3] / "devnet" / "manifests").glob("*.toml"))


def test_the_shipped_manifests_are_the_documented_seven() -> None:
    documented = {"smoke", "churn", "partition", "late-join", "byzantine", "load", "quorum-loss"}
    assert {p.stem for p in SHIPPED} == documented


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_manifest_parses(path: Path) -> None:
    m = load_manifest(path)
    assert m.name == path.stem
    assert m.sim_only_reason() is None  # every shipped manifest also runs on processes
