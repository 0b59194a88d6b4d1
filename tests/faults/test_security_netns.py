"""Security in network namespaces (issue 10; needs root).

* The fault scenarios of :mod:`.scenarios` - a 1|2,3 partition, kill -9 and restart, a
  wiped restart - with the cluster in ``curve`` mode, under the same oracle.
* ``none`` mode: a peer operation forged from the client namespace (not a configured
  peer's host) is refused ``forbidden`` and changes nothing; the same frame from node
  2's namespace is served (so the frame was valid, and the host is what decided).
* ``curve`` mode: the key decides, not the host - a client key is refused peer
  operations even from node 2's namespace, and node 2's key is served from the client
  namespace; no key or an unknown key gets no answer at all.
* ``bin/cluster --secure`` as a user runs it (default ports, so in a namespace of the
  test's own), and the ``bin/client`` line it prints.
"""

from __future__ import annotations

import queue
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import wait_for

from zcounter.security import generate

from .netns import (
    REPO,
    NetCluster,
    _die_with_parent,
    in_namespace,
    scratch_namespace,
    unavailable_reason,
)
from .scenarios import check, run_named

pytestmark = pytest.mark.netns

#: The scenarios re-run in curve mode (the brief: a split, kill -9, a wiped restart).
CURVE_SCENARIOS = ["split-1|23", "sigkill-restart-3", "wipe-restart-3"]


@pytest.fixture(scope="module")
def netns_usable() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("name", CURVE_SCENARIOS)
def test_fault_scenario_in_curve_mode(name: str, tmp_path: Path, netns_usable: None) -> None:
    result = run_named(name, tmp_path / "cluster", secure=True)
    print("\n" + result.summary())
    check(result)


def merge(slot: str, key: str, amount: int = 10**12) -> dict[str, Any]:
    """The issue's attack: a peer's Merge ("push") claiming node 2's slot."""
    return {"op": "merge", "id": 2, "n": 2, "s": {key: {slot: [amount]}}}


PEER_OPS: dict[str, dict[str, Any]] = {
    "fetch": {"op": "fetch", "id": 1, "n": 2, "k": ["default"]},
    "sb": {"op": "sb", "id": 3, "n": 2, "h": [0] * 256},
    "ss": {"op": "ss", "id": 4, "n": 2, "b": [0], "h": [0] * 256},
    "sk": {"op": "sk", "id": 5, "n": 2, "g": [0], "e": [["default", 1]]},
    "rp": {"op": "rp", "id": 6, "n": 2, "e": "", "a": 0},
}


def forbidden(report: dict[str, Any]) -> bool:
    reply = report["reply"]
    return reply is not None and reply.get("error") == "forbidden"


def test_none_mode_refuses_peer_operations_from_a_host_that_is_not_a_peer(
        tmp_path: Path, netns_usable: None) -> None:
    with NetCluster(tmp_path / "cluster") as c:
        c.start_all()
        c.write(1, "default", 5, wait="all")
        keys = ["default", "control"]
        before, _ = c.wait_converged(keys, timeout=10.0)
        assert before == {"default": 5, "control": 0}
        slot2 = "2.000000000000"
        for node in c.ids:
            report = c.forge(c.client_ns, node, merge(slot2, "default"))
            assert forbidden(report), (node, report)
        for op, frame in PEER_OPS.items():
            report = c.forge(c.client_ns, 1, frame)
            assert forbidden(report), (op, report)
        status = c.forge(c.client_ns, 1, {"op": "status", "id": 9})["reply"]
        assert status["status"]["stats"]["forbidden"] == 1 + len(PEER_OPS)
        # Changed nothing anywhere (the refusals were answered after handling them).
        assert {n: v for n, v in c.counts(keys).items()} == {
            n: {"default": 5, "control": 0} for n in c.ids}
        # The control: from node 2's own namespace the same frame is a peer's.
        report = c.forge(c.ns(2), 1, merge(slot2, "control"))
        assert report["reply"] is not None and report["reply"].get("t") == "st", report
        assert c.counts(["control"])[1] == {"control": 10**12}


def test_curve_mode_decides_by_key_not_by_host(tmp_path: Path, netns_usable: None) -> None:
    with NetCluster(tmp_path / "cluster", secure=True) as c:
        c.start_all()
        assert c.keys is not None
        c.write(1, "default", 5, wait="all")
        slot2 = "2.000000000000"
        # No key, or a key nobody authorized: refused at the handshake, never answered.
        _, stranger = generate("stranger", tmp_path / "stranger")
        for netns in (c.client_ns, c.ns(2)):
            plain = c.forge(netns, 1, merge(slot2, "default"), timeout=1.0)
            # A mechanism mismatch (NULL against CURVE) that either side may notice
            # first: "failed-protocol" if the rogue read the node's greeting, "failed"
            # (no detail) if the node had closed the connection already; both were seen.
            assert plain["handshake"] in ("failed-protocol", "failed"), plain
            assert plain["reply"] is None, plain
            unknown = c.forge(netns, 1, merge(slot2, "default"), cert=stranger, timeout=1.0)
            assert unknown == {"handshake": "failed-auth", "reply": None}, unknown
        # The client key: served as a client, refused as a peer - from node 2's host too.
        for netns in (c.client_ns, c.ns(2)):
            report = c.forge(netns, 1, merge(slot2, "default"), cert=c.keys.cert())
            assert report["handshake"] == "succeeded" and forbidden(report), report
        assert c.counts(["default"]) == {n: {"default": 5} for n in c.ids}
        # Node 2's key from the client namespace: a peer (the key is what counts).
        report = c.forge(c.client_ns, 1, merge(slot2, "control"), cert=c.keys.nodes[2][1])
        assert report["reply"] is not None and report["reply"].get("t") == "st", report


def test_bin_cluster_secure_starts_and_its_client_line_works(tmp_path: Path,
                                                             netns_usable: None) -> None:
    """As README says: ``bin/cluster --secure``, then the printed line in another
    terminal.  The default cluster's ports are fixed, so it runs in a namespace of its
    own (this machine is shared)."""
    home = tmp_path / "home"
    with scratch_namespace("cl") as ns:
        proc = subprocess.Popen(
            in_namespace(ns, str(REPO / "bin" / "cluster"), "--secure", "--data-home",
                         str(home)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
            start_new_session=True, preexec_fn=_die_with_parent)
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            command: list[str] | None = None
            while command is None:
                left = deadline - time.monotonic()
                assert left > 0, "bin/cluster printed no bin/client line:\n" + "".join(seen)
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    continue
                seen.append(line)
                if line.strip().startswith("bin/client "):
                    command = shlex.split(line.strip())
            assert command[-1] == "increment" and "--cert" in command, command
            config = command[command.index("--config") + 1]

            def client(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    in_namespace(ns, str(REPO / "bin" / "client"), *args), capture_output=True,
                    text=True, cwd=REPO, timeout=60, check=False)

            # The printed line, as printed (the nodes may still be starting: ask again
            # until one answers, within a deadline).
            line_args = [*command[1:-1], "--timeout", "2", "increment"]
            first = wait_for(lambda: _ok(client(*line_args)), 60.0, interval=0.2,
                             what="the printed bin/client line to succeed")
            assert first.stdout == "1\n"
            assert client(*line_args).stdout == "2\n"
            assert client(*command[1:-1], "getCount").stdout == "2\n"
            # Without the certificate the same cluster refuses, in one line, exit 1.
            no_cert = client("--config", config, "--timeout", "2", "increment")
            assert no_cert.returncode == 1 and "no certificate" in no_cert.stderr
            assert no_cert.stderr.count("\n") == 1
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
        while not lines.empty():
            seen.append(lines.get())
        output = "".join(seen)
        assert proc.returncode == 0, output
        assert output.count("security curve") == 3, output
        assert "all nodes stopped" in output


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str] | None:
    return result if result.returncode == 0 else None
