"""A cluster of real zcounter nodes, each in its own Linux network namespace.

Topology (all names carry this run's id ``zcf-<pid>-<hex>``, so two runs never collide)::

    <run>-sw   a "switch" namespace holding bridge br0
    <run>-n1   node 1: eth0 = 10.A.B.11/24, veth to br0        (one per node)
    <run>-cl   the clients: eth0 = 10.A.B.100/24, veth to br0

The subnet 10.A.B.0/24 (A, B random per run) exists only inside these namespaces and
the cluster file names those addresses, so no test traffic can leave them; the root
namespace has no route to it at all.  Clients run in ``<run>-cl`` through
:mod:`agent` (a subprocess spoken to over a pipe).

Faults:

* network: an nftables table ``inet zcfault`` in each node namespace, re-rendered whole
  and loaded in one atomic transaction per change (drop by peer address, per direction;
  random loss with ``numgen random``); or the node's eth0 set down;
* process: SIGKILL / SIGTERM / SIGSTOP / SIGCONT, restart, restart with a wiped data dir.

``NetCluster(root, secure=True)`` runs the cluster in ``curve`` mode (issue 10): keys
under ``root/keys``, each node started with its ``--secret-key``, the agent with the
client's ``--cert``.  :meth:`NetCluster.forge` sends one hand-made frame from inside any
namespace (:mod:`forge`), and :func:`scratch_namespace` gives a test a namespace of its
own with nothing but loopback.

Cleanup is layered because leaked namespaces outlive the test run: the context manager
(fixtures use it in ``finally``), an ``atexit`` sweep of this run's names, SIGTERM/SIGHUP
turned into ``SystemExit`` so those run, ``PR_SET_PDEATHSIG`` on every child so they die
with us even on SIGKILL, and at start a sweep of namespaces left by runs whose pid is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness import CLUSTER_ROOTS, FAST_SETTINGS, write_config  # noqa: E402

from zcounter.localcluster import ClusterKeys, make_keys  # noqa: E402
from zcounter.procs import stop_processes  # noqa: E402

REPO = _TESTS.parent
AGENT = Path(__file__).resolve().parent / "agent.py"
FORGE = Path(__file__).resolve().parent / "forge.py"
PREFIX = "zcf-"
ROUTER_PORT = 7001
PUB_PORT = 7002
CLIENT_HOST = 100
_PR_SET_PDEATHSIG = 1

#: key -> {slot: [p, n, bp, bn]}, as the agent reports a node's states.
States = dict[str, dict[str, list[int]]]


#: The pseudo-slot of a key's expiry meta ``[F, S, D]`` in wire states (issue 21).
META = "~"


def value(state: Mapping[str, Sequence[int]]) -> int:
    """A key's count from its state, for keys that never expired (every record counts:
    no floor); the meta pseudo-slot is not a record."""
    return sum(r[0] - r[2] - r[1] + r[3] for slot, r in state.items() if slot != META)


# --------------------------------------------------------------------------- preconditions


def unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root (creates network namespaces, veth links and nftables rules)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (Debian packages: iproute2, nftables)"
    probe = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
        if made.returncode != 0:
            return f"'ip netns add' failed: {made.stderr.decode().strip()}"
        nft = subprocess.run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"],
                             capture_output=True, timeout=10)
        if nft.returncode != 0:
            return f"nftables unusable in a namespace: {nft.stderr.decode().strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns' unavailable: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


# --------------------------------------------------------------------------- commands


def sh(*args: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process dies (even SIGKILL),
    # the kernel kills the node too, so nothing keeps a namespace alive.  ``ip netns
    # exec`` execs (no fork), so the flag reaches the python process.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def list_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_netns(names: Iterable[str]) -> None:
    """Kill whatever still runs inside ``names`` and delete them."""
    for name in names:
        for pid in sh("ip", "netns", "pids", name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", name, check=False)


def sweep_orphans() -> None:
    """Delete namespaces of earlier runs whose process no longer exists."""
    stale = []
    for name in list_netns():
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stale.append(name)
        except PermissionError:
            pass
    _kill_netns(stale)


_LIVE: set[NetCluster] = set()
_HOOKS_INSTALLED = False


def _sweep_live() -> None:
    for cluster in list(_LIVE):
        cluster.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every ``finally`` (fixtures, context managers).
    raise SystemExit(128 + signum)


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_sweep_live)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_signal)


# --------------------------------------------------------------------------- the agent


def _env() -> dict[str, str]:
    """The environment of the scripts run by path inside namespaces: zcounter importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


class AgentProc:
    """The client process inside the client namespace (see :mod:`agent`)."""

    def __init__(self, netns: str, config_path: Path, log: Path,
                 cert: Path | None = None) -> None:
        env = _env()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, str(AGENT),
                 "--config", str(config_path), *(["--cert", str(cert)] if cert else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env=env, preexec_fn=_die_with_parent)
        self.log = log
        self._lock = threading.Lock()
        self._seq = 0
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._read(timeout=30)
        if not first.get("ready"):
            raise RuntimeError(f"agent did not start: {first}")

    def _pump(self) -> None:
        # One reader for the agent's whole life: a timed-out call leaves no thread
        # behind that could swallow a later reply.
        stdout = self.proc.stdout
        assert stdout is not None
        for line in stdout:
            self._lines.put(line)
        self._lines.put("")  # EOF

    def _read(self, timeout: float, seq: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if not line:
                raise RuntimeError("client agent did not answer; its stderr:\n"
                                   + self.log.read_text()[-3000:])
            reply: dict[str, Any] = json.loads(line)
            if seq is None or reply.get("seq") == seq:
                return reply
            # else: a late reply to an earlier, timed-out request; skip it.

    def call(self, op: str, rpc_timeout: float = 60.0, **request: Any) -> dict[str, Any]:
        with self._lock:
            stdin = self.proc.stdin
            assert stdin is not None
            self._seq += 1
            stdin.write(json.dumps({"op": op, "seq": self._seq, **request}) + "\n")
            stdin.flush()
            return self._read(rpc_timeout, self._seq)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- a scratch namespace


@contextlib.contextmanager
def scratch_namespace(tag: str = "x") -> Iterator[str]:
    """A network namespace of the test's own with only ``lo`` up: the default ports of
    the built-in cluster are free in it whatever else runs on this machine.  Deleted,
    with everything still running inside, on exit (and swept like the others if the
    test process dies)."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    _install_hooks()
    sweep_orphans()
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-{tag}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _kill_netns([name])


def in_namespace(netns: str, *cmd: str) -> list[str]:
    """``cmd`` run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *cmd]


# --------------------------------------------------------------------------- the cluster


class NetCluster:
    """N node processes in their own namespaces plus a client namespace."""

    def __init__(self, root: Path, n: int = 3, settings: dict[str, Any] | None = None,
                 secure: bool = False) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        _install_hooks()
        sweep_orphans()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        CLUSTER_ROOTS.append(root)
        self.ids = list(range(1, n + 1))
        self.run_id = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        a, b = secrets.randbelow(250) + 1, secrets.randbelow(250) + 1
        self.subnet = f"10.{a}.{b}"
        self.switch = f"{self.run_id}-sw"
        self.client_ns = f"{self.run_id}-cl"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self.agent: AgentProc | None = None
        #: Per node namespace: nft rule lines of the input and output chains.
        self._rules: dict[int, dict[str, list[str]]] = {i: {"input": [], "output": []}
                                                         for i in self.ids}
        self._closed = False
        self.made: list[str] = []
        _LIVE.add(self)
        try:
            self._build()
            nodes = {i: (self.ip(i), ROUTER_PORT, PUB_PORT) for i in self.ids}
            #: Key files in curve mode (``secure``), else None.
            self.keys: ClusterKeys | None = None
            extra: dict[int, dict[str, str]] = {}
            security = None
            if secure:
                self.keys = make_keys(root / "keys", self.ids)
                extra = {i: {"public_key": f"keys/node{i}.key"} for i in self.ids}
                security = {"mode": "curve", "clients": "keys/clients"}
            self.config_path = write_config(root / "cluster.toml", nodes,
                                            FAST_SETTINGS if settings is None else settings,
                                            extra, security)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ topology

    def ns(self, node: int) -> str:
        return f"{self.run_id}-n{node}"

    def ip(self, node: int) -> str:
        return f"{self.subnet}.{10 + node}"

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _attach(self, name: str, port: str, host: int) -> None:
        # Created inside the switch namespace with its peer moved straight into ``name``:
        # no interface ever exists in the root namespace, so nothing there can collide.
        sh("ip", "-n", self.switch, "link", "add", port, "type", "veth",
           "peer", "name", "eth0", "netns", name)
        sh("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", name, "addr", "add", f"{self.subnet}.{host}/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")

    def _build(self) -> None:
        self._add_ns(self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i in self.ids:
            self._add_ns(self.ns(i))
            self._attach(self.ns(i), f"p{i}", 10 + i)
            self._apply_rules(i)
        self._add_ns(self.client_ns)
        self._attach(self.client_ns, "pc", CLIENT_HOST)

    # ------------------------------------------------------------------ processes

    def data_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return self.root / f"node-{node}.log"

    def start(self, node: int) -> None:
        cmd = ["ip", "netns", "exec", self.ns(node), sys.executable, "-m", "zcounter.cli",
               "node", "--id", str(node), "--config", str(self.config_path),
               "--data-dir", str(self.data_dir(node))]
        if self.keys is not None:
            cmd += ["--secret-key", str(self.keys.nodes[node][1])]
        with open(self.log_path(node), "ab") as log:
            self.procs[node] = subprocess.Popen(cmd, stdout=log, stderr=log,
                                                start_new_session=True,
                                                preexec_fn=_die_with_parent)
        self.paused.discard(node)

    def start_all(self, timeout: float = 30.0) -> NetCluster:
        for i in self.ids:
            self.start(i)
        self.client()
        self.wait_ready(self.ids, timeout)
        return self

    def client(self) -> AgentProc:
        if self.agent is None:
            self.agent = AgentProc(self.client_ns, self.config_path, self.root / "agent.log",
                                   self.keys.cert() if self.keys is not None else None)
        return self.agent

    def forge(self, netns: str, node: int, frame: dict[str, Any],
              cert: Path | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """Send ``frame`` to ``node``'s ROUTER from a fresh DEALER in ``netns`` (with
        ``cert``: a CURVE client authenticating the node by its public key); returns
        :mod:`forge`'s report: the reply, or the handshake's outcome and silence."""
        args = ["--endpoint", f"tcp://{self.ip(node)}:{ROUTER_PORT}",
                "--frame", json.dumps(frame), "--timeout", str(timeout)]
        if cert is not None:
            assert self.keys is not None
            args += ["--cert", str(cert), "--server-key", str(self.keys.nodes[node][0])]
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, str(FORGE),
                               *args], capture_output=True, text=True, env=_env(),
                              timeout=timeout + 30, preexec_fn=_die_with_parent, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"forge.py failed ({done.returncode}): {done.stderr[-2000:]}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def wait_ready(self, nodes: Iterable[int], timeout: float = 30.0) -> None:
        nodes = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            for n in nodes:
                if self.procs[n].poll() is not None:
                    raise AssertionError(f"node {n} exited with {self.procs[n].returncode}:\n"
                                         + self.log_path(n).read_text()[-3000:])
            states = self.states(["default"], timeout=0.3)
            if all(states[n] is not None for n in nodes):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {nodes} not ready after {timeout}s: {states}")
            time.sleep(0.05)

    def signal(self, node: int, sig: int) -> None:
        proc = self.procs[node]
        if proc.poll() is None:
            proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.paused.add(node)
        elif sig == signal.SIGCONT:
            self.paused.discard(node)
        elif sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(timeout=10)

    def kill(self, node: int) -> None:
        self.signal(node, signal.SIGKILL)

    def wipe(self, node: int) -> None:
        assert self.procs[node].poll() is not None, "wipe only a stopped node"
        shutil.rmtree(self.data_dir(node), ignore_errors=True)

    def stop_nodes(self) -> None:
        stop_processes(self.procs.values())
        self.paused.clear()

    # ------------------------------------------------------------------ client side

    def states(self, keys: Sequence[str], timeout: float = 0.5) -> dict[int, States | None]:
        """Every node's states of ``keys`` (None for a node that did not answer)."""
        reply = self.client().call("states", rpc_timeout=len(self.ids) * timeout + 10,
                                   keys=list(keys), timeout=timeout)
        return {int(k): v for k, v in reply["states"].items()}

    def counts(self, keys: Sequence[str] = ("default",),
               timeout: float = 0.5) -> dict[int, dict[str, int] | None]:
        """Every node's counts of ``keys`` (None for a node that did not answer)."""
        return {n: None if st is None else {k: value(st.get(k, {})) for k in keys}
                for n, st in self.states(keys, timeout).items()}

    def write(self, node: int, key: str, amount: int = 0, reset: bool = False,
              wait: str = "local", timeout: float = 2.0) -> int:
        """One update at ``node`` (``amount`` < 0 decrements, ``reset`` resets); returns
        the count the node answered.  Fails the test on any error."""
        reply = self.client().call("write", rpc_timeout=timeout + 10, node=node, key=key,
                                   amount=amount, reset=reset, wait=wait, timeout=timeout)
        if "error" in reply:
            raise AssertionError(f"write to node {node} failed: {reply['error']}: "
                                 f"{reply['message']}")
        return int(reply["count"])

    def wait_converged(self, keys: Sequence[str], timeout: float = 30.0,
                       nodes: list[int] | None = None,
                       on_poll: Callable[[dict[int, States | None]], None] | None = None
                       ) -> tuple[dict[str, int], float]:
        """Poll until every (given) node answers with the same state of every key in
        ``keys``; return (the counts, when)."""
        nodes = nodes or self.ids
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(keys, timeout=0.5)
            now = time.monotonic()
            if on_poll:
                on_poll(states)
            views = [states[n] for n in nodes]
            first = views[0]
            if first is not None and all(v is not None and all(
                    v.get(k, {}) == first.get(k, {}) for k in keys) for v in views):
                return {k: value(first.get(k, {})) for k in keys}, now
            if now > deadline:
                differ = sorted({k for k in keys for v in views if v is None
                                 or first is None or v.get(k, {}) != first.get(k, {})})
                raise AssertionError(
                    f"no convergence within {timeout}s: {len(differ)} keys differ, e.g. "
                    + "; ".join(f"{k!r}: " + ", ".join(
                        f"node {n} " + ("-" if states[n] is None
                                        else str(value(states[n].get(k, {}))))  # type: ignore[union-attr]
                        for n in nodes) for k in differ[:3]))
            time.sleep(0.02)

    # ------------------------------------------------------------------ network faults

    def _apply_rules(self, node: int) -> None:
        chains = self._rules[node]
        body = "\n".join(
            f"  chain {chain} {{ type filter hook {chain} priority 0; policy accept;\n"
            f"    {'iifname' if chain == 'input' else 'oifname'} \"lo\" accept\n"
            + "".join(f"    {rule}\n" for rule in chains[chain]) + "  }"
            for chain in ("input", "output"))
        # add+delete+define in one nft transaction: atomic replace of the whole table.
        script = ("add table inet zcfault\ndelete table inet zcfault\n"
                  f"table inet zcfault {{\n{body}\n}}\n")
        sh("ip", "netns", "exec", self.ns(node), "nft", "-f", "-", input=script)

    def block(self, src: int, dst: int) -> None:
        """Drop every packet from ``src`` to ``dst`` (one direction), at dst's input."""
        rule = f"ip saddr {self.ip(src)} drop"
        if rule not in self._rules[dst]["input"]:
            self._rules[dst]["input"].append(rule)
            self._apply_rules(dst)

    def cut_client(self, node: int) -> None:
        """Drop everything the client namespace sends to ``node`` (its replies stop too:
        no ACKs); the node keeps its peers."""
        rule = f"ip saddr {self.subnet}.{CLIENT_HOST} drop"
        if rule not in self._rules[node]["input"]:
            self._rules[node]["input"].append(rule)
            self._apply_rules(node)

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every node-to-node path between different groups (both directions).
        Clients still reach every node: only replication is cut."""
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1:]:
                for a in g:
                    for b in h:
                        self.block(a, b)
                        self.block(b, a)

    def loss(self, node: int, percent: int) -> None:
        """Drop ``percent``% of packets at random, both ways, on node's eth0."""
        self._rules[node]["input"].append(f"numgen random mod 100 < {percent} drop")
        self._rules[node]["output"].append(f"numgen random mod 100 < {percent} drop")
        self._apply_rules(node)

    def link(self, node: int, up: bool) -> None:
        """Set the node's eth0 up or down: cuts peers *and* clients."""
        sh("ip", "-n", self.ns(node), "link", "set", "eth0", "up" if up else "down")

    def heal(self) -> None:
        for node in self.ids:
            if self._rules[node]["input"] or self._rules[node]["output"]:
                self._rules[node] = {"input": [], "output": []}
                self._apply_rules(node)
            self.link(node, True)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        try:
            if self.agent is not None:
                self.agent.close()
        finally:
            try:
                self.stop_nodes()
            finally:
                # Everything named with this run's id, including anything created
                # before ``made`` recorded it.
                ours = set(self.made) | {n for n in list_netns()
                                         if n.startswith(self.run_id + "-")}
                _kill_netns(sorted(ours))

    def __enter__(self) -> NetCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
