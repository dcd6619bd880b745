"""`depin-devnet run` refuses, in one line and exit 2, what it cannot honour on processes here."""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.cli import run as devnet
from devnet.netns import links_across, links_of

PARTITION = """\
[network]
nodes = 4
epochs = 4
[[perturbation]]
at_epoch = 2
action = "partition"
groups = [[0, 1, 2]]
"""


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert devnet(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_link_delay_and_loss_are_refused_there_is_no_netem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "links.toml"
    manifest.write_text("[network]\nnodes = 2\nepochs = 2\n[links]\nloss = 0.1\n")
    assert "netem" in _refused(capsys, str(manifest))


def test_link_cuts_without_namespaces_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "partition.toml"
    manifest.write_text(PARTITION)
    err = _refused(capsys, str(manifest), "--loopback")
    assert "cuts links" in err and "depin-devnet sim" in err


def test_a_partition_cuts_exactly_the_links_across_it() -> None:
    # Node 3 is in no group: it forms a group of its own.
    assert links_across([[0, 1, 2]], 4) == {frozenset((i, 3)) for i in range(3)}
    assert links_across([[0, 1], [2, 3]], 4) == {frozenset(p) for p in ((0, 2), (0, 3), (1, 2), (1, 3))}
    assert links_of(1, 3) == {frozenset((0, 1)), frozenset((1, 2))}
