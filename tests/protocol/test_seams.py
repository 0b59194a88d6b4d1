"""The seams between the parts of a node core (zcounter.protocol.node and the parts it
wires): every input type has a route, and the repair needs only its narrow host."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from corelink import S, core

from zcounter.model.keyspace import Keyspace
from zcounter.model.page import StatePage
from zcounter.protocol.batch import Batch, Calls, Kind
from zcounter.protocol.messages import (
    Applied,
    Broadcast,
    ClientRequest,
    Heartbeat,
    PeerRequest,
    RidEntry,
    SyncBuckets,
)
from zcounter.protocol.outputs import ToPeer
from zcounter.protocol.peers import Peer
from zcounter.protocol.repair import Repairer, RepairHost
from zcounter.protocol.rids import RidLog
from zcounter.protocol.stats import NodeStats


def test_every_request_and_broadcast_type_has_a_route():
    c = core(1)
    assert set(c._requests) == set(get_args(ClientRequest)) | set(get_args(PeerRequest))
    assert set(c._broadcasts) == set(get_args(Broadcast))
    assert set(c._replies) == set(Kind)


def test_the_repair_modules_import_nothing_of_the_core():
    """node.py and antientropy.py imported each other; the repair now sees the core
    only as a RepairHost."""
    code = ("import sys, zcounter.protocol.repair, zcounter.protocol.repair_session; "
            "print('zcounter.protocol.node' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


class _Host:
    """The least a repair can run with: what RepairHost lists, nothing of a core."""

    bootstrapping = False

    def __init__(self) -> None:
        self.repaired: list[int] = []

    def vector(self) -> Applied:
        return {1: ("e1", 0)}

    def accept_page(self, page: StatePage, sender: int) -> int | None:
        return 0

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        pass

    def repaired_from(self, peer: Peer) -> None:
        self.repaired.append(peer.node_id)


def test_a_repair_starts_against_a_host_that_is_not_a_core():
    batch = Batch(0.0)
    peers = {2: Peer(2)}
    host: RepairHost = _Host()
    repairer = Repairer(host, 1, S, Keyspace(), peers, RidLog(10, 60.0, "e1", 0.0),
                        batch, Calls(batch), NodeStats())
    peers[2].last_heard = 0.0
    repairer.observe(peers[2], Heartbeat(2, "e2", 3, 0, 0, {2: ("e2", 3)}, "r2", 1), 0.0)
    assert peers[2].wants_repair()  # its deltas 1..3 never reached us
    batch.now = peers[2].last_heard = 1.0  # live, and past the rate limit
    repairer.tick(1.0)
    sent = [m for m in batch.messages if isinstance(m, ToPeer)]
    assert [type(m.request) for m in sent] == [SyncBuckets] and sent[0].peer == 2
    assert repairer.session is not None and repairer.session.peer == 2
