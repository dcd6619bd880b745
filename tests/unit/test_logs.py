"""Logging: JSON lines when not on a terminal, level filtering, optional file."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from depin_p2p.logs import close_log_files, configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    close_log_files()
    structlog.reset_defaults()


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(fmt="auto", level="info", stream=out)
    structlog.get_logger().info("gossip.peer.banned", peer="abc", code="bad_signature")
    structlog.get_logger().debug("hidden.event")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "gossip.peer.banned"
    assert doc["code"] == "bad_signature"
    assert doc["level"] == "info"


def test_human_format_and_file_copy(tmp_path: Path) -> None:
    out = io.StringIO()
    log_file = tmp_path / "node.log"
    configure_logging(fmt="human", level="debug", file=log_file, stream=out)
    structlog.get_logger().debug("consensus.epoch.committed", epoch=3)
    assert "consensus.epoch.committed" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")
    doc = json.loads(log_file.read_text().splitlines()[0])
    assert doc["epoch"] == 3


def test_json_with_file_writes_both(tmp_path: Path) -> None:
    out = io.StringIO()
    log_file = tmp_path / "node.log"
    configure_logging(fmt="json", level="warning", file=log_file, stream=out)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud", n=1)
    assert json.loads(out.getvalue())["event"] == "loud"
    assert json.loads(log_file.read_text())["event"] == "loud"
