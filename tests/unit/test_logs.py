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


def test_stdlib_and_libp2p_log_records_come_out_as_json_lines(tmp_path: Path) -> None:
    import logging  # noqa: PLC0415

    import libp2p  # noqa: F401, PLC0415  (its import resets the libp2p logger; conftest imported it too)

    out = io.StringIO()
    log_file = tmp_path / "node.log"
    configure_logging(fmt="json", level="info", file=log_file, stream=out)
    # What py-libp2p's TCP transport logs when a dial fails, and an exception from a third party.
    logging.getLogger("libp2p.transport.tcp").error("Failed to open TCP stream: %s", "connection refused")
    try:
        _ = 1 // 0
    except ZeroDivisionError:
        logging.getLogger("trio.whatever").exception("worker died")
    logging.getLogger("libp2p.pubsub").info("below the stdlib threshold")
    chatty = logging.getLogger("libp2p.network.auto_connector")
    chatty.setLevel(logging.INFO)  # as py-libp2p's auto-connector logger is
    chatty.info("AUTO_CONNECTOR_STATE: num_connections=3")
    for text in (out.getvalue(), log_file.read_text()):
        docs = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
        messages = [d["message"] for d in docs]
        assert messages == ["Failed to open TCP stream: connection refused", "worker died"]
        assert docs[0]["event"] == "log.stdlib"
        assert docs[0]["logger"] == "libp2p.transport.tcp"
        assert docs[0]["level"] == "error"
        assert "ZeroDivisionError" in docs[1]["exception"]
    chatty.setLevel(logging.NOTSET)
