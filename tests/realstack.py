"""Ground truth from real Linux TCP stacks: known bytes through network namespaces.

``record(scenario, workdir)`` builds a tiny private network of network
namespaces, captures it with tcpdump at three points, and runs real clients and
servers (Python sockets) that exchange deterministic pseudo-random payloads.
Every peer writes down exactly what it passed to ``sendall()`` and exactly what
``recv()`` gave it: what the receiver's kernel delivered is the truth a
reassembler must reproduce from the captures.

Topology (default ``topology="router"``)::

    client ns            router ns                          server ns
    c0 10.99.1.2/24 ---- r0 10.99.1.1/24   r1 10.99.2.1/24 ---- s0 10.99.2.2/24
       fd00:99:1::2/64      fd00:99:1::1/64  fd00:99:2::1/64       fd00:99:2::2/64
                         [tbf on r1: c2s]  [tbf on r0: s2c]

The router forwards (no NAT). With ``tbf=True`` it shapes its egress with a
token bucket whose queue holds only a few frames, so bursts are dropped *between*
the two capture points: the sender-side capture (``client_pcap``, on c0) holds
segments the receiver-side capture (``server_pcap``, on s0) never saw, and the
real TCP stacks recover with SACK / fast retransmit / RTO retransmissions.
``topology="direct"`` joins client and server by one veth pair (10.99.0.0/24,
fd00:99::/64); tbf then sits on each sender's own egress, which also produces
retransmissions, but both captures see the same frames.

Captures (BPF filter ``tcp``, ``-U -w``, offloads off on every veth so frames
are wire-sized and carry real checksums):
``client_pcap`` (c0), ``server_pcap`` (s0), ``snap_pcap`` (s0, ``-s snaplen``).

Source-port reuse (``reuse_source_port=True``): every session binds the client
socket (SO_REUSEADDR) to one fixed port and connects to the same server
address and port, one session after the other. The server closes first, so
TIME_WAIT stays on the server, which accepts a new SYN for a 4-tuple in
TIME_WAIT (the ISN and timestamp grow); the client only passes through
LAST_ACK, and a connect() that still finds it gets EADDRNOTAVAIL and is retried.
``net.ipv4.tcp_tw_reuse=1`` is set in the client namespace as well.

Closing: ``"fin"`` (server first), ``"fin-client-first"`` (not with port
reuse: it would leave TIME_WAIT on the client), ``"rst"`` (the client waits until
SIOCOUTQ says all its data was acknowledged, then closes with SO_LINGER 0).
Sessions are opened in scenario order (``RealSession.index``); the next
connect() starts only after the previous one returned, so the captures show the
first SYNs in that order even with ``concurrency`` > 1.

Robustness: every command and process has a timeout (peers arm SIGALRM,
tcpdump runs under ``timeout``); namespaces (``twrs-<pid>-<n>-<role>``) are
deleted in ``finally`` and at exit, and ``available()`` deletes those of
harness processes that no longer exist, killing what still runs inside.

This file is also the peer program: ``python realstack.py peer server|client
SPEC OUT`` runs inside a namespace (stdlib only, no tcpweave import).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RealCapture",
    "RealSession",
    "RealStackError",
    "Scenario",
    "SessionSpec",
    "available",
    "payload",
    "record",
]

CLOSES = ("fin", "fin-client-first", "rst")
SERVER_PORT = 5000
CLIENT_PORT_BASE = 40000
REUSED_CLIENT_PORT = 45678
_CMD_TIMEOUT = 10.0  # seconds, for every setup command
_THIS = Path(__file__).resolve()


class RealStackError(RuntimeError):
    """Setting up, running or tearing down a real-stack recording failed."""


# --------------------------------------------------------------------------- data


def payload(seed: int, session: int, direction: str, index: int, size: int) -> bytes:
    """The deterministic bytes of write ``index`` of ``direction`` in ``session``."""
    return random.Random(f"tcpweave/{seed}/{session}/{direction}/{index}").randbytes(size)


@dataclass(frozen=True)
class SessionSpec:
    """One connection: the write sizes each way and how it ends.

    ``close``: ``"fin"`` (server closes first, then the client: TIME_WAIT on the
    server), ``"fin-client-first"`` (client shuts down its sending side first),
    ``"rst"`` (client aborts with SO_LINGER 0 once everything was delivered
    and acknowledged; the server never sends FIN).
    """

    c2s_writes: tuple[int, ...] = (300, 20_000, 7)
    s2c_writes: tuple[int, ...] = (1_000, 50_000)
    close: str = "fin"
    ipv6: bool = False


@dataclass(frozen=True)
class Scenario:
    """What ``record`` runs. ``session_specs`` (if given) overrides the shorthands.

    ``ipv6``: False (all IPv4), True (all IPv6) or ``"mixed"`` (alternate).
    ``closes`` is cycled over the sessions. ``concurrency`` > 1 runs that many
    sessions at once (each on its own client port; connects still happen in
    session order). The tbf knobs apply to the router's (or senders')
    egress in ``tbf_directions``.
    """

    sessions: int = 3
    c2s_writes: tuple[int, ...] = (300, 20_000, 7)
    s2c_writes: tuple[int, ...] = (1_000, 50_000)
    closes: tuple[str, ...] = ("fin",)
    ipv6: bool | str = False
    reuse_source_port: bool = False
    tbf: bool = False
    tbf_rate: str = "40mbit"
    tbf_burst: int = 4_500  # bytes: three full frames
    tbf_limit: int = 4_500  # bytes queued before tbf drops
    tbf_directions: tuple[str, ...] = ("c2s", "s2c")
    topology: str = "router"
    concurrency: int = 1
    write_pause: float = 0.0  # seconds between two writes of one direction
    snaplen: int = 96
    seed: int = 0
    timeout: float = 60.0  # seconds for the whole exchange
    session_specs: tuple[SessionSpec, ...] | None = None

    def specs(self) -> tuple[SessionSpec, ...]:
        if self.session_specs is not None:
            return tuple(self.session_specs)
        return tuple(
            SessionSpec(
                c2s_writes=tuple(self.c2s_writes),
                s2c_writes=tuple(self.s2c_writes),
                close=self.closes[i % len(self.closes)],
                ipv6=bool(i % 2) if self.ipv6 == "mixed" else bool(self.ipv6),
            )
            for i in range(self.sessions)
        )


@dataclass
class RealSession:
    """One session as the endpoints saw it. ``c2s_bytes``/``s2c_bytes`` are what
    the receiving application got from recv(); ``*_sent`` what the peer sent."""

    index: int  # session order: the order connect() was called (= order of first SYN)
    ip_version: int
    client_addr: str
    client_port: int
    server_addr: str
    server_port: int
    close: str  # "fin" or "rst"
    first_fin: str | None  # "server", "client", or None for rst
    c2s_bytes: bytes
    s2c_bytes: bytes
    c2s_sent: bytes
    s2c_sent: bytes
    connect_ts: float  # epoch seconds just before connect()
    connect_attempts: int  # > 1 when connect() had to be retried (EADDRNOTAVAIL)

    @property
    def four_tuple(self) -> tuple[str, int, str, int]:
        return (self.client_addr, self.client_port, self.server_addr, self.server_port)

    def truth(self, direction: str) -> bytes:
        return self.c2s_bytes if direction == "c2s" else self.s2c_bytes

    def sent(self, direction: str) -> bytes:
        return self.c2s_sent if direction == "c2s" else self.s2c_sent


@dataclass
class RealCapture:
    """Three captures of the same traffic and the per-session truth."""

    workdir: Path
    client_pcap: Path  # at the client's interface: sender side of c2s
    server_pcap: Path  # at the server's interface: receiver side of c2s
    snap_pcap: Path  # at the server's interface with a small snaplen
    snaplen: int
    sessions: list[RealSession]
    scenario: Scenario
    tcpdump_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def sender_pcap(self) -> Path:
        return self.client_pcap

    @property
    def receiver_pcap(self) -> Path:
        return self.server_pcap

    def sender_side(self, direction: str) -> Path:
        """The capture taken at the sending end of ``direction``."""
        return self.client_pcap if direction == "c2s" else self.server_pcap

    def receiver_side(self, direction: str) -> Path:
        """The capture taken at the receiving end of ``direction`` (full snaplen)."""
        return self.server_pcap if direction == "c2s" else self.client_pcap

    @property
    def pcaps(self) -> dict[str, Path]:
        return {"client": self.client_pcap, "server": self.server_pcap, "snap": self.snap_pcap}


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class _Net:
    client_v4: str
    server_v4: str
    client_v6: str
    server_v6: str


_NETS = {
    "router": _Net("10.99.1.2", "10.99.2.2", "fd00:99:1::2", "fd00:99:2::2"),
    "direct": _Net("10.99.0.2", "10.99.0.1", "fd00:99::2", "fd00:99::1"),
}

_live_namespaces: set[str] = set()
_live_procs: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()
_counter = 0


def _cleanup_everything() -> None:
    for proc in list(_live_procs.values()):
        _kill(proc)
    for ns in list(_live_namespaces):
        _delete_namespace(ns)


atexit.register(_cleanup_everything)


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RealStackError(f"timed out after {_CMD_TIMEOUT}s: {' '.join(args)}") from exc
    if check and res.returncode != 0:
        raise RealStackError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", ns, *args], check=check)


def _new_namespace(role: str) -> str:
    global _counter
    with _lock:
        _counter += 1
        name = f"twrs-{os.getpid()}-{_counter}-{role}"
        _live_namespaces.add(name)
    try:
        _run(["ip", "netns", "add", name])
    except BaseException:
        _live_namespaces.discard(name)
        raise
    return name


def _delete_namespace(name: str) -> None:
    with contextlib.suppress(Exception):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=_CMD_TIMEOUT)
    _live_namespaces.discard(name)


def _veth(ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
    # Created directly inside the namespaces: no interface ever appears on the host.
    peer = ["peer", "name", dev_b, "netns", ns_b]
    _run(["ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", *peer])


def _address(ns: str, dev: str, v4: str, v6: str) -> None:
    # Fixed addresses only, no generated link-local ones (which would first go
    # through duplicate address detection). A fixed link-local address is still
    # needed: a router resolves the next hop of a forwarded packet from it.
    _ns(ns, "ip", "link", "set", dev, "addrgenmode", "none")
    _ns(ns, "ip", "addr", "add", f"{v4}/24", "dev", dev)
    _ns(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
    _ns(ns, "ip", "-6", "addr", "add", f"fe80::{v6.rsplit(':', 1)[1]}/64", "dev", dev, "nodad")
    # Wire-sized frames with real checksums (no TSO/GSO/GRO, no checksum offload).
    _ns(ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
    _ns(ns, "ip", "link", "set", dev, "up")


def _tbf(ns: str, dev: str, sc: Scenario) -> None:
    bucket = ["rate", sc.tbf_rate, "burst", str(sc.tbf_burst), "limit", str(sc.tbf_limit)]
    _ns(ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", *bucket)


def _build_network(sc: Scenario) -> tuple[list[str], str, str]:
    """Create the namespaces (cleaned up by the caller); return (all, client, server)."""
    names: list[str] = []
    try:
        cli = _new_namespace("c")
        names.append(cli)
        srv = _new_namespace("s")
        names.append(srv)
        for ns in (cli, srv):
            _ns(ns, "ip", "link", "set", "lo", "up")
        _ns(cli, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
        if sc.topology == "direct":
            _veth(cli, "c0", srv, "s0")
            net = _NETS["direct"]
            _address(cli, "c0", net.client_v4, net.client_v6)
            _address(srv, "s0", net.server_v4, net.server_v6)
            shaped = {"c2s": (cli, "c0"), "s2c": (srv, "s0")}
        else:
            rtr = _new_namespace("r")
            names.append(rtr)
            _ns(rtr, "ip", "link", "set", "lo", "up")
            _veth(cli, "c0", rtr, "r0")
            _veth(rtr, "r1", srv, "s0")
            _address(cli, "c0", "10.99.1.2", "fd00:99:1::2")
            _address(rtr, "r0", "10.99.1.1", "fd00:99:1::1")
            _address(rtr, "r1", "10.99.2.1", "fd00:99:2::1")
            _address(srv, "s0", "10.99.2.2", "fd00:99:2::2")
            _ns(rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _ns(rtr, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            # Routes to the other side only (no default route: nothing leaves).
            _ns(cli, "ip", "route", "add", "10.99.2.0/24", "via", "10.99.1.1")
            _ns(cli, "ip", "-6", "route", "add", "fd00:99:2::/64", "via", "fd00:99:1::1")
            _ns(srv, "ip", "route", "add", "10.99.1.0/24", "via", "10.99.2.1")
            _ns(srv, "ip", "-6", "route", "add", "fd00:99:1::/64", "via", "fd00:99:2::1")
            shaped = {"c2s": (rtr, "r1"), "s2c": (rtr, "r0")}
        if sc.tbf:
            for direction in sc.tbf_directions:
                _tbf(*shaped[direction], sc)
        return names, cli, srv
    except BaseException:
        for ns in names:
            _delete_namespace(ns)
        raise


# --------------------------------------------------------------------------- processes


def _spawn(args: Sequence[str], stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
    _live_procs[proc.pid] = proc
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_CMD_TIMEOUT)
    _live_procs.pop(proc.pid, None)


def _wait(proc: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill(proc)
        raise RealStackError(f"{what} did not finish within {timeout:.0f}s") from exc
    _live_procs.pop(proc.pid, None)
    return rc


def _wait_for(pred: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise RealStackError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RealStackError(f"{what}: not ready within {timeout:.0f}s")
        time.sleep(0.02)


def _tail(path: Path, n: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


class _Tcpdump:
    """tcpdump inside a namespace, under coreutils ``timeout`` so that it cannot
    outlive a harness that was killed outright (``timeout`` passes our SIGINT on)."""

    def __init__(self, ns: str, dev: str, out: Path, snaplen: int, lifetime: float) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        tcpdump = ["tcpdump", "-i", dev, "-n", "-U", "-Z", "root", "--immediate-mode", "-B", "8192"]
        tcpdump += ["-s", str(snaplen), "-w", str(out), "tcp"]
        args = ["ip", "netns", "exec", ns, "timeout", "-s", "INT", f"{lifetime:.0f}", *tcpdump]
        self.proc = _spawn(args, out.with_suffix(".stdout"), self.log)

    def wait_ready(self) -> None:
        _wait_for(
            lambda: "listening on" in _tail(self.log),
            _CMD_TIMEOUT,
            f"tcpdump {self.out.name}",
            self.proc,
        )

    def stop(self) -> dict[str, int]:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        _wait(self.proc, _CMD_TIMEOUT, f"tcpdump {self.out.name}")
        stats = {}
        for key in ("captured", "received by filter", "dropped by kernel"):
            m = re.search(rf"(\d+) packets? {key}", _tail(self.log))
            stats[key.replace(" ", "_")] = int(m.group(1)) if m else -1
        return stats


# --------------------------------------------------------------------------- record


def _plan(sc: Scenario) -> list[dict[str, Any]]:
    net = _NETS["direct" if sc.topology == "direct" else "router"]
    plan = []
    for i, spec in enumerate(sc.specs()):
        if spec.close not in CLOSES:
            raise ValueError(f"session {i}: close must be one of {CLOSES}, not {spec.close!r}")
        if sc.reuse_source_port and spec.close == "fin-client-first":
            raise ValueError("reuse_source_port needs the server to close first (TIME_WAIT)")
        plan.append(
            {
                "index": i,
                "family": 6 if spec.ipv6 else 4,
                "client_addr": net.client_v6 if spec.ipv6 else net.client_v4,
                "server_addr": net.server_v6 if spec.ipv6 else net.server_v4,
                "client_port": REUSED_CLIENT_PORT if sc.reuse_source_port else CLIENT_PORT_BASE + i,
                "server_port": SERVER_PORT,
                "c2s_writes": list(spec.c2s_writes),
                "s2c_writes": list(spec.s2c_writes),
                "close": spec.close,
            }
        )
    return plan


def record(scenario: Scenario, workdir: Path | str) -> RealCapture:
    """Run ``scenario`` between real TCP stacks; return the captures and the truth."""
    reason = available()
    if reason is not None:
        raise RealStackError(reason)
    if scenario.topology not in _NETS:
        raise ValueError(f"topology must be one of {sorted(_NETS)}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    plan = _plan(scenario)
    concurrency = 1 if scenario.reuse_source_port else max(1, scenario.concurrency)
    spec = {
        "seed": scenario.seed,
        "sessions": plan,
        "concurrency": concurrency,
        "write_pause": scenario.write_pause,
        "timeout": scenario.timeout,
        "truth_dir": str(workdir / "truth"),
    }
    (workdir / "truth").mkdir(exist_ok=True)
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    t0 = time.monotonic()
    names, cli, srv = _build_network(scenario)
    procs: list[subprocess.Popen[bytes]] = []
    dumps: list[_Tcpdump] = []
    stats: dict[str, dict[str, int]] = {}
    try:
        server = _start_peer(srv, "server", spec_path, workdir)
        procs.append(server)
        ready = workdir / "truth" / "server.ready"
        _wait_for(ready.exists, _CMD_TIMEOUT, "server", server)
        life = scenario.timeout + 60
        dumps = [
            _Tcpdump(cli, "c0", workdir / "client.pcap", 262144, life),
            _Tcpdump(srv, "s0", workdir / "server.pcap", 262144, life),
            _Tcpdump(srv, "s0", workdir / "snap.pcap", scenario.snaplen, life),
        ]
        procs.extend(d.proc for d in dumps)
        for d in dumps:
            d.wait_ready()
        client = _start_peer(cli, "client", spec_path, workdir)
        procs.append(client)
        rc_c = _wait(client, scenario.timeout + 5, "client")
        if rc_c:  # the server would wait for sessions that never come
            _kill(server)
        rc_s = _wait(server, 15, "server")
        _quiesce([cli, srv], 3.0)
        time.sleep(0.2)  # the last frames reach tcpdump, which writes each one (-U)
        stats = {d.out.stem: d.stop() for d in dumps}
        if rc_c or rc_s:
            raise RealStackError(
                f"peers failed (client {rc_c}, server {rc_s}):\n"
                f"client: {_tail(workdir / 'client.stderr')}\n"
                f"server: {_tail(workdir / 'server.stderr')}"
            )
    finally:
        for proc in procs:
            _kill(proc)
        for ns in names:
            _delete_namespace(ns)
    sessions = _collect(workdir, plan)
    return RealCapture(
        workdir=workdir,
        client_pcap=workdir / "client.pcap",
        server_pcap=workdir / "server.pcap",
        snap_pcap=workdir / "snap.pcap",
        snaplen=scenario.snaplen,
        sessions=sessions,
        scenario=scenario,
        tcpdump_stats=stats,
        duration_s=time.monotonic() - t0,
    )


def _start_peer(ns: str, role: str, spec: Path, workdir: Path) -> subprocess.Popen[bytes]:
    peer = [
        sys.executable,
        "-I",
        str(_THIS),
        "peer",
        role,
        str(spec),
        str(workdir / f"{role}.json"),
    ]
    args = ["ip", "netns", "exec", ns, *peer]
    return _spawn(args, workdir / f"{role}.stdout", workdir / f"{role}.stderr")


def _quiesce(namespaces: list[str], timeout: float) -> None:
    """Wait (bounded) until no socket is still closing (FIN_WAIT, LAST_ACK...), so
    that retransmitted FINs and the last ACKs are on the wire before capture stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closing = ["ss", "-Htn", "state", "connected", "exclude", "time-wait"]
        busy = [_ns(ns, *closing, check=False).stdout.strip() for ns in namespaces]
        if not any(busy):
            return
        time.sleep(0.05)


def _collect(workdir: Path, plan: list[dict[str, Any]]) -> list[RealSession]:
    client = {s["index"]: s for s in json.loads((workdir / "client.json").read_text())}
    truth = workdir / "truth"
    sessions = []
    for p in sorted(plan, key=lambda p: client[p["index"]]["connect_order"]):
        i = p["index"]
        c = client[i]
        sessions.append(
            RealSession(
                index=c["connect_order"],
                ip_version=p["family"],
                client_addr=p["client_addr"],
                client_port=p["client_port"],
                server_addr=p["server_addr"],
                server_port=p["server_port"],
                close="rst" if p["close"] == "rst" else "fin",
                first_fin={"fin": "server", "fin-client-first": "client"}.get(p["close"]),
                c2s_bytes=(truth / f"{i:05d}.c2s.recv").read_bytes(),
                s2c_bytes=(truth / f"{i:05d}.s2c.recv").read_bytes(),
                c2s_sent=(truth / f"{i:05d}.c2s.sent").read_bytes(),
                s2c_sent=(truth / f"{i:05d}.s2c.sent").read_bytes(),
                connect_ts=c["connect_ts"],
                connect_attempts=c["attempts"],
            )
        )
    return sessions


# --------------------------------------------------------------------------- available


@functools.cache
def available() -> str | None:
    """None when real-stack recordings work here, else why not (for pytest.skip)."""
    if sys.platform != "linux":
        return f"real TCP stacks need Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "real TCP stacks need root (network namespaces, tcpdump)"
    tools = ("ip", "ss", "tc", "tcpdump", "ethtool", "sysctl", "timeout")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        return f"real TCP stacks need {', '.join(missing)} on PATH"
    try:
        _reap_stale()
        return _probe()
    except Exception as exc:  # anything at all: report it as the skip reason
        return f"network namespaces / veth / tcpdump do not work here: {exc}"


def _reap_stale() -> None:
    """Delete namespaces left by a harness process that no longer exists (killed
    before its atexit cleanup), with the processes still running inside them."""
    listed = _run(["ip", "netns", "list"]).stdout.split()
    for name in listed:
        m = re.fullmatch(r"twrs-(\d+)-\d+-\w+", name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        for pid in _run(["ip", "netns", "pids", name], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _delete_namespace(name)


def _probe() -> str | None:
    names: list[str] = []
    proc = None
    try:
        a = _new_namespace("pa")
        names.append(a)
        b = _new_namespace("pb")
        names.append(b)
        _veth(a, "c0", b, "s0")
        _address(a, "c0", "10.99.0.2", "fd00:99::2")
        _address(b, "s0", "10.99.0.1", "fd00:99::1")
        sc = Scenario()
        _tbf(a, "c0", sc)
        log = Path(f"/tmp/twrs-probe-{os.getpid()}.log")
        proc = _spawn(
            ["ip", "netns", "exec", a, "tcpdump", "-i", "c0", "-n", "-w", "/dev/null", "tcp"],
            Path(os.devnull),
            log,
        )
        try:
            _wait_for(lambda: "listening on" in _tail(log), _CMD_TIMEOUT, "tcpdump", proc)
        finally:
            _kill(proc)
            with contextlib.suppress(OSError):
                log.unlink()
        return None
    finally:
        for ns in names:
            _delete_namespace(ns)


# --------------------------------------------------------------------------- peers
# Everything below runs inside a namespace, in a fresh interpreter.

_TIOCOUTQ = 0x5411  # SIOCOUTQ: bytes in the send queue not yet acknowledged


class _Truth:
    def __init__(self, truth_dir: Path, index: int, direction: str, kind: str) -> None:
        self.file = open(truth_dir / f"{index:05d}.{direction}.{kind}", "wb")
        self.count = 0

    def add(self, data: bytes) -> None:
        self.file.write(data)
        self.count += len(data)

    def close(self) -> None:
        self.file.close()


def _send_all(
    conn: socket.socket, spec: dict[str, Any], s: dict[str, Any], direction: str, truth: _Truth
) -> None:
    for k, size in enumerate(s[f"{direction}_writes"]):
        if k and spec["write_pause"]:
            time.sleep(spec["write_pause"])
        data = payload(spec["seed"], s["index"], direction, k, size)
        conn.sendall(data)
        truth.add(data)


def _recv(conn: socket.socket, truth: _Truth, limit: int | None) -> None:
    """Receive until ``limit`` bytes (or EOF when ``limit`` is None)."""
    while limit is None or truth.count < limit:
        want = 65536 if limit is None else min(65536, limit - truth.count)
        data = conn.recv(want)
        if not data:
            if limit is not None:
                raise RealStackError(f"EOF after {truth.count} of {limit} bytes")
            return
        truth.add(data)


class _Sender(threading.Thread):
    def __init__(
        self,
        conn: socket.socket,
        spec: dict[str, Any],
        s: dict[str, Any],
        direction: str,
        truth: _Truth,
    ) -> None:
        super().__init__(daemon=True)
        self.args = (conn, spec, s, direction, truth)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _send_all(*self.args)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            raise RealStackError("sender did not finish")
        if self.error is not None:
            raise self.error


def _serve_one(conn: socket.socket, spec: dict[str, Any], s: dict[str, Any]) -> None:
    truth_dir = Path(spec["truth_dir"])
    conn.settimeout(spec["timeout"])
    got = _Truth(truth_dir, s["index"], "c2s", "recv")
    sent = _Truth(truth_dir, s["index"], "s2c", "sent")
    sender = _Sender(conn, spec, s, "s2c", sent)
    sender.start()
    try:
        if s["close"] == "fin-client-first":
            _recv(conn, got, None)
        else:
            _recv(conn, got, sum(s["c2s_writes"]))
        sender.finish(spec["timeout"])
        if s["close"] == "rst":  # wait for the client's RST (or a FIN, which is a failure)
            conn.settimeout(min(3.0, spec["timeout"]))  # an RST lost on the way is not resent
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                if conn.recv(1):
                    raise RealStackError("data after the expected end")
    finally:
        got.close()
        sent.close()
        conn.close()


def _peer_server(spec: dict[str, Any]) -> None:
    sessions = spec["sessions"]
    pending: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for s in sessions:
        key = (socket.inet_pton(_family(s), s["client_addr"]).hex(), s["client_port"])
        pending.setdefault(key, []).append(s)
    sel = selectors.DefaultSelector()
    for family, addr, port in sorted(
        {(s["family"], s["server_addr"], s["server_port"]) for s in sessions}
    ):
        lsock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((addr, port))
        lsock.listen(128)
        sel.register(lsock, selectors.EVENT_READ)
    Path(spec["truth_dir"], "server.ready").touch()
    threads: list[threading.Thread] = []
    errors: list[str] = []

    def handle(conn: socket.socket, s: dict[str, Any]) -> None:
        try:
            _serve_one(conn, spec, s)
        except BaseException as exc:
            errors.append(f"session {s['index']}: {exc!r}")

    deadline = time.monotonic() + spec["timeout"]
    served = 0
    while served < len(sessions) and time.monotonic() < deadline:
        for ready, _ in sel.select(timeout=0.5):
            assert isinstance(ready.fileobj, socket.socket)
            conn, peer = ready.fileobj.accept()
            fam = socket.AF_INET6 if conn.family == socket.AF_INET6 else socket.AF_INET
            who = (socket.inet_pton(fam, peer[0]).hex(), peer[1])
            if not pending.get(who):
                conn.close()
                errors.append(f"unexpected connection from {peer}")
                continue
            t = threading.Thread(target=handle, args=(conn, pending[who].pop(0)), daemon=True)
            t.start()
            threads.append(t)
            served += 1
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1)
    if served < len(sessions):
        errors.append(f"only {served} of {len(sessions)} sessions arrived")
    if any(t.is_alive() for t in threads):
        errors.append("a session handler did not finish")
    if errors:
        raise RealStackError("; ".join(errors))


def _family(s: dict[str, Any]) -> socket.AddressFamily:
    return socket.AF_INET6 if s["family"] == 6 else socket.AF_INET


def _connect(s: dict[str, Any], timeout: float) -> tuple[socket.socket, float, int]:
    """Connect from the session's fixed client port, retrying while the 4-tuple is
    still held by the previous session's socket (LAST_ACK: EADDRNOTAVAIL)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        conn = socket.socket(_family(s), socket.SOCK_STREAM)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        conn.settimeout(timeout)
        try:
            conn.bind((s["client_addr"], s["client_port"]))
            ts = time.time()
            conn.connect((s["server_addr"], s["server_port"]))
            return conn, ts, attempts
        except OSError as exc:
            conn.close()
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _client_one(conn: socket.socket, spec: dict[str, Any], s: dict[str, Any]) -> None:
    truth_dir = Path(spec["truth_dir"])
    got = _Truth(truth_dir, s["index"], "s2c", "recv")
    sent = _Truth(truth_dir, s["index"], "c2s", "sent")
    sender = _Sender(conn, spec, s, "c2s", sent)
    sender.start()
    try:
        if s["close"] == "fin-client-first":
            sender.finish(spec["timeout"])
            conn.shutdown(socket.SHUT_WR)
            _recv(conn, got, None)
        elif s["close"] == "fin":
            _recv(conn, got, None)  # the server's FIN comes after all our data arrived
            sender.finish(spec["timeout"])
        else:
            _recv(conn, got, sum(s["s2c_writes"]))
            sender.finish(spec["timeout"])
            _wait_acked(conn, spec["timeout"])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        got.close()
        sent.close()
        conn.close()


def _wait_acked(conn: socket.socket, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while True:
        fcntl.ioctl(conn.fileno(), _TIOCOUTQ, buf)
        if struct.unpack("i", buf)[0] == 0:
            return
        if time.monotonic() > deadline:
            raise RealStackError("sent data never acknowledged")
        time.sleep(0.005)


def _peer_client(spec: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    slots = threading.Semaphore(spec["concurrency"])
    threads: list[threading.Thread] = []

    def run(conn: socket.socket, s: dict[str, Any]) -> None:
        try:
            _client_one(conn, spec, s)
        except BaseException as exc:
            errors.append(f"session {s['index']}: {exc!r}")
        finally:
            slots.release()

    for order, s in enumerate(spec["sessions"]):
        if not slots.acquire(timeout=spec["timeout"]):
            raise RealStackError("no session slot freed in time")
        conn, ts, attempts = _connect(s, spec["timeout"])
        results.append(
            {"index": s["index"], "connect_order": order, "connect_ts": ts, "attempts": attempts}
        )
        t = threading.Thread(target=run, args=(conn, s), daemon=True)
        t.start()
        threads.append(t)
        if spec["concurrency"] == 1:
            t.join(spec["timeout"])
    for t in threads:
        t.join(spec["timeout"])
    if any(t.is_alive() for t in threads):
        errors.append("a client session did not finish")
    if errors:
        raise RealStackError("; ".join(errors))
    return results


def _peer_main(argv: list[str]) -> int:
    role, spec_path, out = argv
    spec = json.loads(Path(spec_path).read_text())
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(spec["timeout"]) + 10)  # never outlive the harness
    if role == "server":
        _peer_server(spec)
        Path(out).write_text("[]")
    else:
        Path(out).write_text(json.dumps(_peer_client(spec)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "peer":
        sys.exit(_peer_main(sys.argv[2:]))
    print("usage: realstack.py peer server|client SPEC OUT", file=sys.stderr)
    sys.exit(2)
