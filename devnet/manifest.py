"""Scenario manifests: one TOML file describes a whole run, for `sim` and for `run`.

A manifest names the network (nodes, validators and their stake, epoch
length, how many epochs, a seed), the devices (a radio grid or explicit H3
cells, compute providers), the links (simulator only: delay, jitter, loss),
perturbations at given epochs and adversaries by role. Every key is checked
here, before anything starts: a bad manifest is one :class:`ManifestError`
naming the key and the problem, which the CLI prints as one line (exit 2).

Example (every table but ``[network]`` is optional)::

    name = "partition"
    [network]
    nodes = 4              # node processes (or simulated nodes)
    validators = 4         # the first N nodes validate
    stake = 10000          # tokens each validator bonds (or a list, one per validator)
    epoch_seconds = 10
    epochs = 12            # run until every running honest node committed this epoch
    seed = 1

    [devices]
    radios_per_node = 3    # on a square grid of spacing_m around the centre
    spacing_m = 1500
    compute = "all"        # "all", "none", or a list of node indices with one provider each

    [links]                # sim only (the kernel here has no netem): `run` refuses these
    delay_ms = 10
    jitter_ms = 5
    loss = 0.0

    [[perturbation]]
    at_epoch = 4
    action = "partition"
    groups = [[0, 1], [2, 3]]

    [[perturbation]]
    at_epoch = 7
    action = "heal"

    [[adversary]]
    role = "equivocating-validator"
    node = 3
    from_epoch = 2

Perturbation actions and their keys: ``kill``/``restart``/``pause``/``resume``/
``disconnect``/``reconnect``/``join`` take ``node``; ``partition`` takes
``groups`` (disjoint lists of node indices; nodes in no group form one more
group) and ``heal`` takes nothing; ``transfer`` takes ``node`` (the sender),
``to`` and ``amount`` (tokens); ``stake``/``unstake`` take ``node`` and
``amount``. A node whose first perturbation is ``join`` starts only then.
The sequence is checked per node (a ``restart`` needs a node that is down,
``resume`` one that is paused, and so on).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import h3

from depin_p2p.errors import ConfigError
from depin_p2p.model import MICRO
from devnet.adversaries.registry import CATALOGUE, PROCESS_ROLES

# Roles a manifest may name. The catalogue grows one module at a time (devnet/adversaries/).
ADVERSARY_ROLES: frozenset[str] = frozenset(CATALOGUE)

NODE_ACTIONS = frozenset({"kill", "restart", "pause", "resume", "disconnect", "reconnect", "join"})
TX_ACTIONS = frozenset({"transfer", "stake", "unstake"})
ACTIONS = NODE_ACTIONS | TX_ACTIONS | {"partition", "heal"}

MAX_NODES = 1_000
MAX_EPOCHS = 100_000
MIN_EPOCH_SECONDS = 1.0
MAX_EPOCH_SECONDS = 86_400.0


class ManifestError(ConfigError):
    """A manifest that cannot run: the message names the key and the problem."""


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    nodes: int
    validators: int
    stake_micro: tuple[int, ...]  # one per validator
    epoch_seconds: float
    epochs: int
    seed: int


@dataclass(frozen=True, slots=True)
class DevicesSpec:
    radios_per_node: int = 3
    spacing_m: int = 1_500
    cells: tuple[int, ...] = ()  # explicit H3 cells (resolution 12), assigned to nodes in turn
    compute_nodes: tuple[int, ...] = ()  # nodes that own one compute provider


@dataclass(frozen=True, slots=True)
class LinkSpec:
    delay_ms: int = 0
    jitter_ms: int = 0
    loss: float = 0.0

    @property
    def perturbs(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss > 0


@dataclass(frozen=True, slots=True)
class Perturbation:
    index: int  # position in the manifest, for messages and reports
    at_epoch: int
    action: str
    node: int | None = None
    groups: tuple[tuple[int, ...], ...] = ()
    to: int | None = None
    amount_micro: int = 0


@dataclass(frozen=True, slots=True)
class AdversarySpec:
    role: str
    node: int
    from_epoch: int = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    network: NetworkSpec
    devices: DevicesSpec
    links: LinkSpec
    perturbations: tuple[Perturbation, ...] = ()
    adversaries: tuple[AdversarySpec, ...] = ()
    source: str = field(default="", compare=False)

    def late_joiners(self) -> frozenset[int]:
        """Nodes that start only at their ``join`` perturbation."""
        first: dict[int, str] = {}
        for p in self.perturbations:
            if p.node is not None and p.action in NODE_ACTIONS:
                first.setdefault(p.node, p.action)
        return frozenset(n for n, action in first.items() if action == "join")

    def needs_link_cuts(self) -> bool:
        """Whether `run` needs network namespaces (real link cuts) for this manifest."""
        return any(p.action in ("partition", "heal", "disconnect", "reconnect") for p in self.perturbations)

    def sim_only_reason(self) -> str | None:
        """Why this manifest cannot run on processes here, or None."""
        if self.links.perturbs:
            return (
                "links: link delay, jitter and loss run only in `depin-devnet sim` "
                "(this kernel has no netem); remove [links] to use `run`"
            )
        sim_only = sorted({a.role for a in self.adversaries} - PROCESS_ROLES)
        if sim_only:
            return (
                f"adversary: role {', '.join(sim_only)} runs only in `depin-devnet sim` "
                f"(on processes: {', '.join(sorted(PROCESS_ROLES))})"
            )
        return None


def load_manifest(path: Path) -> Manifest:
    """Read and check a manifest file.

    Raises:
        ManifestError: missing or unreadable file, TOML syntax, or any key that is unknown,
            of the wrong type or out of range (the message names it).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"manifest {path}: {exc.strerror or exc}") from None
    return parse_manifest(text, source=str(path))


def with_epoch_seconds(manifest: Manifest, seconds: float, *, source: str) -> Manifest:
    """``manifest`` with epochs of ``seconds``, checked as ``network.epoch_seconds`` is."""
    seconds = _Parser(source).epoch_seconds(seconds, "--epoch-seconds")
    return replace(manifest, network=replace(manifest.network, epoch_seconds=seconds))


def parse_manifest(text: str, *, source: str = "manifest") -> Manifest:
    """Parse and check manifest text (see the module docstring for the keys)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source}: not valid TOML: {exc}") from None
    return _Parser(source).manifest(doc)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: {key}: {problem}")

    # ------------------------------------------------------------ typed reads

    def table(
        self, doc: dict[str, Any], key: str, allowed: set[str], *, required: bool = False
    ) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            if required:
                raise self.fail(key, "missing (a table is required)")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        self.known(value, key, allowed)
        return value

    def known(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def integer(
        self, table: dict[str, Any], key: str, where: str, bounds: tuple[int, int], default: int | None
    ) -> int:
        lo, hi = bounds
        value = table.get(key, default)
        name = f"{where}.{key}"
        if value is None:
            raise self.fail(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, not {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(name, f"must be in [{lo}, {hi}], got {value}")
        return value

    def number(
        self, table: dict[str, Any], key: str, where: str, bounds: tuple[float, float], default: float
    ) -> float:
        return self.bounded(table.get(key, default), f"{where}.{key}", bounds)

    def bounded(self, value: object, name: str, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, f"must be a number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(name, f"must be in [{lo:g}, {hi:g}], got {value:g}")
        return float(value)

    def epoch_seconds(self, value: object, name: str) -> float:
        seconds = self.bounded(value, name, (MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS))
        if seconds * 1000 != int(seconds * 1000):
            raise self.fail(name, "must be a whole number of milliseconds")
        return seconds

    def tokens(self, value: object, name: str) -> int:
        """Tokens (up to 6 decimals, as a number or a string) to micro-units, > 0."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(name, f"must be an amount of tokens, not {_kind(value)}")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(name, f"not an amount of tokens: {value!r}") from None
        micro = amount * MICRO
        if not amount.is_finite() or micro != micro.to_integral_value() or micro <= 0:
            raise self.fail(name, f"must be a positive amount with at most 6 decimals, got {value}")
        return int(micro)

    def node_index(self, value: object, name: str, nodes: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a node index, not {_kind(value)}")
        if not 0 <= value < nodes:
            raise self.fail(name, f"node {value} does not exist (nodes are 0..{nodes - 1})")
        return value

    def node_list(self, value: object, name: str, nodes: int) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list of node indices, not {_kind(value)}")
        out = tuple(self.node_index(v, f"{name}[{i}]", nodes) for i, v in enumerate(value))
        if len(set(out)) != len(out):
            raise self.fail(name, "names a node twice")
        return out

    # --------------------------------------------------------------- sections

    def manifest(self, doc: dict[str, Any]) -> Manifest:
        self.known(doc, "manifest", {"name", "network", "devices", "links", "perturbation", "adversary"})
        name = doc.get("name", Path(self.source).stem)
        if not isinstance(name, str) or not name:
            raise self.fail("name", "must be a non-empty string")
        network = self.network(self.table(doc, "network", _NETWORK_KEYS, required=True))
        devices = self.devices(self.table(doc, "devices", _DEVICE_KEYS), network.nodes)
        links = self.links(self.table(doc, "links", _LINK_KEYS))
        perturbations = self.perturbations(doc.get("perturbation", []), network)
        adversaries = self.adversaries(doc.get("adversary", []), network)
        return Manifest(name, network, devices, links, perturbations, adversaries, source=self.source)

    def network(self, t: dict[str, Any]) -> NetworkSpec:
        nodes = self.integer(t, "nodes", "network", (1, MAX_NODES), None)
        validators = self.integer(t, "validators", "network", (1, nodes), nodes)
        raw_stake = t.get("stake", 10_000)
        if isinstance(raw_stake, list):
            if len(raw_stake) != validators:
                raise self.fail("network.stake", f"lists {len(raw_stake)} stakes for {validators} validators")
            stake = tuple(self.tokens(s, f"network.stake[{i}]") for i, s in enumerate(raw_stake))
        else:
            stake = (self.tokens(raw_stake, "network.stake"),) * validators
        epoch_seconds = self.epoch_seconds(t.get("epoch_seconds", 10.0), "network.epoch_seconds")
        epochs = self.integer(t, "epochs", "network", (1, MAX_EPOCHS), None)
        seed = self.integer(t, "seed", "network", (0, 2**63 - 1), 0)
        return NetworkSpec(nodes, validators, stake, epoch_seconds, epochs, seed)

    def devices(self, t: dict[str, Any], nodes: int) -> DevicesSpec:
        radios = self.integer(t, "radios_per_node", "devices", (0, 64), 3)
        spacing = self.integer(t, "spacing_m", "devices", (100, 100_000), 1_500)
        cells: tuple[int, ...] = ()
        if "cells" in t:
            raw = t["cells"]
            if not isinstance(raw, list) or not raw:
                raise self.fail("devices.cells", "must be a non-empty list of H3 cells (hex strings)")
            if "radios_per_node" in t:
                raise self.fail("devices.cells", "give either cells or radios_per_node, not both")
            parsed = []
            for i, c in enumerate(raw):
                if not isinstance(c, str) or not h3.is_valid_cell(c) or h3.get_resolution(c) != 12:
                    raise self.fail(f"devices.cells[{i}]", f"not an H3 cell of resolution 12: {c!r}")
                parsed.append(int(c, 16))
            if len(set(parsed)) != len(parsed):
                raise self.fail("devices.cells", "lists a cell twice")
            cells = tuple(parsed)
        compute = t.get("compute", "all")
        if compute == "all":
            compute_nodes = tuple(range(nodes))
        elif compute == "none":
            compute_nodes = ()
        elif isinstance(compute, list):
            compute_nodes = self.node_list(compute, "devices.compute", nodes)
        else:
            raise self.fail(
                "devices.compute", f'must be "all", "none" or a list of node indices, not {compute!r}'
            )
        return DevicesSpec(radios, spacing, cells, compute_nodes)

    def links(self, t: dict[str, Any]) -> LinkSpec:
        return LinkSpec(
            delay_ms=self.integer(t, "delay_ms", "links", (0, 60_000), 0),
            jitter_ms=self.integer(t, "jitter_ms", "links", (0, 60_000), 0),
            loss=self.number(t, "loss", "links", (0.0, 1.0), 0.0),
        )

    def perturbations(self, raw: object, net: NetworkSpec) -> tuple[Perturbation, ...]:
        if not isinstance(raw, list):
            raise self.fail("perturbation", "must be an array of tables ([[perturbation]])")
        out = []
        for i, t in enumerate(raw):
            where = f"perturbation[{i}]"
            if not isinstance(t, dict):
                raise self.fail(where, "must be a table")
            action = t.get("action")
            if action not in ACTIONS:
                raise self.fail(
                    f"{where}.action", f"must be one of {', '.join(sorted(ACTIONS))}, got {action!r}"
                )
            keys = {"at_epoch", "action"} | _ACTION_KEYS[action]
            self.known(t, where, keys)
            for k in _ACTION_KEYS[action]:
                if k not in t:
                    raise self.fail(f"{where}.{k}", f"missing (a {action} needs it)")
            at = self.integer(t, "at_epoch", where, (1, net.epochs), None)
            node = self.node_index(t["node"], f"{where}.node", net.nodes) if "node" in t else None
            to = self.node_index(t["to"], f"{where}.to", net.nodes) if "to" in t else None
            amount = self.tokens(t["amount"], f"{where}.amount") if "amount" in t else 0
            groups: tuple[tuple[int, ...], ...] = ()
            if action == "partition":
                groups = self.groups(t["groups"], f"{where}.groups", net.nodes)
            if action == "transfer" and to == node:
                raise self.fail(f"{where}.to", "a node cannot transfer to itself")
            out.append(Perturbation(i, at, action, node, groups, to, amount))
        out.sort(key=lambda p: (p.at_epoch, p.index))
        self.check_sequence(out)
        return tuple(out)

    def groups(self, raw: object, name: str, nodes: int) -> tuple[tuple[int, ...], ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(name, "must be a non-empty list of lists of node indices")
        groups = tuple(self.node_list(g, f"{name}[{i}]", nodes) for i, g in enumerate(raw))
        seen: set[int] = set()
        for g in groups:
            if not g:
                raise self.fail(name, "has an empty group")
            if seen & set(g):
                raise self.fail(name, f"node {min(seen & set(g))} is in two groups")
            seen |= set(g)
        if len(groups) == 1 and len(seen) == nodes:
            raise self.fail(name, "one group holding every node cuts nothing")
        return groups

    def check_sequence(self, perturbations: list[Perturbation]) -> None:
        """Each node's actions in epoch order must make sense: restart after kill, and so on."""
        state: dict[int, str] = {}
        first_action: dict[int, str] = {}
        for p in perturbations:
            if p.node is not None and p.action in NODE_ACTIONS:
                first_action.setdefault(p.node, p.action)
        for node, action in first_action.items():
            if action == "join":
                state[node] = "absent"
        partitioned = False
        for p in perturbations:
            where = f"perturbation[{p.index}] ({p.action} at epoch {p.at_epoch})"
            if p.action == "partition":
                partitioned = True
                continue
            if p.action == "heal":
                if not partitioned:
                    raise self.fail(where, "heal without a partition before it")
                partitioned = False
                continue
            assert p.node is not None
            now = state.get(p.node, "up")
            # A transaction is signed by the node and submitted through it: it must be running.
            need, then = _TRANSITIONS.get(p.action, (("up", "disconnected"), now))
            if now not in need:
                raise self.fail(
                    where, f"node {p.node} is {now} then; {p.action} needs it {' or '.join(need)}"
                )
            state[p.node] = then

    def adversaries(self, raw: object, net: NetworkSpec) -> tuple[AdversarySpec, ...]:
        if not isinstance(raw, list):
            raise self.fail("adversary", "must be an array of tables ([[adversary]])")
        out = []
        nodes: set[int] = set()
        for i, t in enumerate(raw):
            where = f"adversary[{i}]"
            if not isinstance(t, dict):
                raise self.fail(where, "must be a table")
            self.known(t, where, {"role", "node", "from_epoch"})
            role = t.get("role")
            if role not in ADVERSARY_ROLES:
                raise self.fail(
                    f"{where}.role", f"unknown role {role!r} (known: {', '.join(sorted(ADVERSARY_ROLES))})"
                )
            if "node" not in t:
                raise self.fail(f"{where}.node", "missing")
            node = self.node_index(t["node"], f"{where}.node", net.nodes)
            if node in nodes:
                raise self.fail(f"{where}.node", f"node {node} already has a role")
            nodes.add(node)
            if CATALOGUE[role].validator_only and node >= net.validators:
                raise self.fail(
                    f"{where}.node",
                    f"node {node} is not a validator (validators are 0..{net.validators - 1})",
                )
            from_epoch = self.integer(t, "from_epoch", where, (1, net.epochs), 1)
            out.append(AdversarySpec(role, node, from_epoch))
        return tuple(out)


_NETWORK_KEYS = {"nodes", "validators", "stake", "epoch_seconds", "epochs", "seed"}
_DEVICE_KEYS = {"radios_per_node", "spacing_m", "cells", "compute"}
_LINK_KEYS = {"delay_ms", "jitter_ms", "loss"}
_ACTION_KEYS: dict[str, set[str]] = {
    **{a: {"node"} for a in NODE_ACTIONS},
    "partition": {"groups"},
    "heal": set(),
    "transfer": {"node", "to", "amount"},
    "stake": {"node", "amount"},
    "unstake": {"node", "amount"},
}
# action -> (states it needs, state after it)
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "kill": (("up", "paused", "disconnected"), "down"),
    "restart": (("down",), "up"),
    "pause": (("up",), "paused"),
    "resume": (("paused",), "up"),
    "disconnect": (("up",), "disconnected"),
    "reconnect": (("disconnected",), "up"),
    "join": (("absent",), "up"),
}


def _kind(value: object) -> str:
    return {str: "a string", bool: "a boolean", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )
