"""One Linux network namespace per node, joined by a mesh of veth links: real link cuts for `run`.

Node ``i`` lives in namespace ``depin-<run>-<i>`` with address
``10.77.0.<i+1>`` on its loopback. Every pair of nodes ``(i, j)`` has its own
veth pair (``p<j>`` in ``i``'s namespace, ``p<i>`` in ``j``'s) and a /32
route over it, so a partition sets exactly the links that cross it down and
every other link keeps carrying traffic; each link's byte counters then show
that nothing crossed the cut (a shared bridge could not tell a cut link from
a busy one without packet-filter counters, and this machine has no nftables,
iptables or tc filters installed: only iproute2). Nothing is created in the
host's own namespace, so a run touches no other address.

The kernel has no ``netem`` here: links have no delay, jitter or loss, and
``run`` refuses manifests that ask for them.

Everything is made with the ``ip`` command (iproute2) and needs root. A
:class:`Mesh` is a context manager: the namespaces (and with them every veth)
are deleted on exit, on Ctrl-C and on failure.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable
from types import TracebackType

from depin_p2p.errors import ConfigError

NS_PREFIX = "depin-"
MAX_MESH_NODES = 64  # 2016 veth pairs: far more processes than one machine runs
IP_TIMEOUT_S = 30.0
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"

Link = frozenset[int]


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``, no ``ip netns``), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip` command"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns list` failed: {exc}"
    return None


def address(index: int) -> str:
    """Node ``index``'s address in the mesh."""
    return f"10.77.0.{index + 1}"


def list_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    """Names of the network namespaces that start with ``prefix`` (for leftovers checks)."""
    out = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=IP_TIMEOUT_S
    )
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(prefix)]


def _ip(args: list[str], *, batch: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["ip", *args], check=False, input=batch, capture_output=True, text=True, timeout=IP_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class Mesh:
    """``nodes`` namespaces, a veth link between each pair; cut and restore links; read counters.

    Args:
        nodes: how many namespaces (at most :data:`MAX_MESH_NODES`).
        run_id: part of every namespace name (random by default), so runs never collide.
    """

    def __init__(self, nodes: int, run_id: str | None = None) -> None:
        if not 1 <= nodes <= MAX_MESH_NODES:
            raise ConfigError(f"network namespaces: {nodes} nodes (at most {MAX_MESH_NODES} on processes)")
        self.nodes = nodes
        self.run_id = run_id or secrets.token_hex(3)
        self.created: list[str] = []
        self.down: set[Link] = set()

    def namespace(self, index: int) -> str:
        return f"{NS_PREFIX}{self.run_id}-{index}"

    def links(self) -> list[Link]:
        return [frozenset(p) for p in itertools.combinations(range(self.nodes), 2)]

    def exec_prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program inside node ``index``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(index)]

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Mesh:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def create(self) -> None:
        """Make the namespaces, their addresses, the veth pairs and the routes. Raises ConfigError."""
        for i in range(self.nodes):
            _ip(["netns", "add", self.namespace(i)])
            self.created.append(self.namespace(i))
        pairs = "".join(
            f"link add p{j} netns {self.namespace(i)} type veth peer name p{i} netns {self.namespace(j)}\n"
            for i, j in itertools.combinations(range(self.nodes), 2)
        )
        if pairs:
            _ip(["-batch", "-"], batch=pairs)
        for i in range(self.nodes):
            lines = ["link set lo up", f"addr add {address(i)}/32 dev lo"]
            for j in range(self.nodes):
                if j != i:
                    lines += [f"link set p{j} up", f"route add {address(j)}/32 dev p{j} src {address(i)}"]
            _ip(["-n", self.namespace(i), "-batch", "-"], batch="\n".join(lines) + "\n")

    def destroy(self) -> None:
        """Delete every namespace this mesh made (their veths go with them); never raises.

        A namespace still holding a process survives its name's deletion until
        that process ends: stop the node processes first.
        """
        for name in reversed(self.created):
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True, timeout=IP_TIMEOUT_S
            )
        self.created.clear()

    # ------------------------------------------------------------ links

    def apply_cuts(self, cut: Iterable[Link]) -> None:
        """Set exactly the links in ``cut`` down (both ends) and every other link up."""
        want = set(cut)
        for link in sorted(want - self.down, key=sorted):
            self._set(link, "down")
        for link in sorted(self.down - want, key=sorted):
            self._set(link, "up")
        self.down = want

    def _set(self, link: Link, state: str) -> None:
        i, j = sorted(link)
        _ip(["-n", self.namespace(i), "link", "set", f"p{j}", state])
        _ip(["-n", self.namespace(j), "link", "set", f"p{i}", state])
        if state == "up":  # the route left with the link's carrier
            for a, b in ((i, j), (j, i)):
                route = ["route", "replace", f"{address(b)}/32", "dev", f"p{b}", "src", address(a)]
                _ip(["-n", self.namespace(a), *route])

    def counters(self) -> dict[Link, int]:
        """Bytes each link has carried so far (both directions, read at its lower-indexed end)."""
        out: dict[Link, int] = {}
        for i in range(self.nodes):
            doc = json.loads(_ip(["-n", self.namespace(i), "-j", "-s", "link", "show"]) or "[]")
            for dev in doc:
                name = str(dev.get("ifname", ""))
                if not name.startswith("p") or not name[1:].isdigit() or int(name[1:]) <= i:
                    continue
                stats = dev.get("stats64", {})
                out[frozenset((i, int(name[1:])))] = int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])
        return out

    # ------------------------------------------------------------ sockets

    def socket(self, index: int) -> socket.socket:
        """A TCP socket in node ``index``'s namespace (to reach its 127.0.0.1). Raises OSError."""
        return socket_in(os.path.join(_NETNS_DIR, self.namespace(index)))


def socket_in(netns_path: str) -> socket.socket:
    """A TCP socket created inside the network namespace at ``netns_path``.

    The namespace of a socket is fixed when it is made, so a short-lived
    thread enters the namespace (``setns`` changes only the calling thread),
    makes the socket and ends; the caller's threads never change namespace.
    """
    result: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns_path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError as exc:  # handed to the caller's thread, raised there
            result.append(exc)

    thread = threading.Thread(target=make, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    got = result[0]
    if isinstance(got, OSError):
        raise got
    return got


def links_across(groups: Iterable[Iterable[int]], nodes: int) -> set[Link]:
    """The links a partition into ``groups`` cuts (nodes in no group form one more group)."""
    side: dict[int, int] = {}
    for g, members in enumerate(groups):
        for n in members:
            side[n] = g
    return {
        frozenset((i, j))
        for i, j in itertools.combinations(range(nodes), 2)
        if side.get(i, -1) != side.get(j, -1)
    }


def links_of(node: int, nodes: int) -> set[Link]:
    """Every link of ``node``."""
    return {frozenset((node, j)) for j in range(nodes) if j != node}


def pairs(links: Iterable[Link]) -> list[tuple[int, int]]:
    """``links`` as sorted (i, j) pairs, in order."""
    return sorted((min(link), max(link)) for link in links)
