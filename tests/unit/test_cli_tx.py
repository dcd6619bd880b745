"""Amount parsing and the transaction commands' error paths (no node running)."""

from __future__ import annotations

from pathlib import Path

import pytest

from depin_p2p import cli
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "micro"),
    [("1", 1_000_000), ("1.5", 1_500_000), ("0.000001", 1), ("12.345678", 12_345_678), ("007", 7_000_000)],
)
def test_amounts_are_tokens_with_six_decimals(text: str, micro: int) -> None:
    assert cli.parse_amount(text) == micro
    assert cli.parse_amount(cli.format_amount(micro)) == micro


@pytest.mark.parametrize("text", ["-1", "0", "0.0", "1.1234567", "1e3", "1,5", " 1", "", ".5", "1.", "nan"])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        cli.parse_amount(text)


def test_amount_over_u64_is_refused() -> None:
    with pytest.raises(ConfigError, match="more than"):
        cli.parse_amount(str(2**64))


def test_no_node_running_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    to = KeyPair.generate().address
    assert cli.run(["transfer", "--home", str(tmp_path), to, "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("depin-p2p: error:")
    assert cli.run(["peers", "--home", str(tmp_path)]) == 2
    assert "no node has run" in capsys.readouterr().err
    assert cli.run(["stake", "--home", str(tmp_path), "1.2345678"]) == 2
    assert "6 decimals" in capsys.readouterr().err
