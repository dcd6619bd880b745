"""deploy/ stays in step with the command line: every command its files run parses (issue 17).

Docker has no daemon on this machine and systemd runs no units in CI, so the
image, the compose devnet and the unit are not started here; what can drift
silently (a renamed option, a moved home, a node address outside the
compose network) is checked against the real parsers.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

import pytest

from depin_p2p.cli import build_parser as node_parser
from devnet.cli import build_parser as devnet_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _parses(argv: list[str]) -> None:
    tool, *rest = argv
    parser = node_parser() if tool.endswith("depin-p2p") else devnet_parser()
    assert tool.endswith(("depin-p2p", "depin-devnet")), argv
    try:
        parser.parse_args(rest)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"{shlex.join(argv)}: refused by the parser ({exc.code})")


def test_the_systemd_unit_runs_a_home_and_does_not_restart_a_configuration_error() -> None:
    unit = (DEPLOY / "systemd" / "depin-p2p.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", unit, re.M)
    _parses(shlex.split(exec_start))
    assert re.search(r"^RestartPreventExitStatus=2$", unit, re.M)
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)


def test_the_compose_devnet_commands_parse_and_its_addresses_are_the_exported_ones() -> None:
    compose = (DEPLOY / "docker" / "compose.yaml").read_text()
    (script,) = re.findall(r'^    - "(\[ -f .+)"$', compose, re.M)
    for part in re.split(r"\|\||;", script):
        words = shlex.split(part.strip())
        if words and words[0] == "exec":
            words = words[1:]
        if words and words[0] == "depin-p2p":
            _parses(words)
    (export_line,) = re.findall(r"^#   (\.venv/bin/depin-devnet export .+)$", compose, re.M)
    export = shlex.split(export_line)
    _parses(export)
    for line in re.findall(r"^#   (.+ (depin-p2p .+))$", compose, re.M):
        _parses(shlex.split(line[1]))
    given = [export[i + 1] for i, w in enumerate(export) if w == "--ip"]
    (subnet,) = re.findall(r"subnet: (\S+)", compose)
    net = ipaddress.ip_network(subnet)
    services = re.findall(
        r"^  (node\d+):\n    <<: \*node\n    volumes: (.+)\n"
        r"    networks: \{devnet: \{ipv4_address: (\S+)\}\}$",
        compose,
        re.M,
    )
    assert [s[0] for s in services] == [f"node{i}" for i in range(4)]
    assert [s[2] for s in services] == given
    for i, (_, volumes, ip) in enumerate(services):
        assert ipaddress.ip_address(ip) in net
        assert f"./devnet/node-{i}.bundle:/bundle:ro" in volumes and f"./devnet/home-{i}:/data" in volumes
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    (cmd,) = re.findall(r'^CMD \["run", "--home", "(\S+)"\]$', dockerfile, re.M)
    _parses(["depin-p2p", "run", "--home", cmd])
    assert "/data/home" in script and cmd == "/data/home"
