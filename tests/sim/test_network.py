"""The packet simulator: delays and order, loss, duplication, cuts, the real codec."""

from __future__ import annotations

import random
from collections import Counter

from zcounter.protocol.messages import Add, Delta, Heartbeat
from zcounter.sim import Swarm
from zcounter.sim.network import Kind, Network, Packet
from zcounter.sim.scheduler import Scheduler


def _net(**swarm: object) -> tuple[Network, Scheduler, Counter[str]]:
    scheduler, stats = Scheduler(), Counter[str]()
    return Network(Swarm.calm(**swarm), random.Random(3), scheduler, stats), scheduler, stats


def _drain(scheduler: Scheduler) -> list[Packet]:
    out: list[Packet] = []
    while scheduler:
        out += [e for e in scheduler.next_instant() if isinstance(e, Packet)]
    return out


def _hb(seq: int) -> Heartbeat:
    return Heartbeat(1, "e" * 12, seq, 0, 0, {}, "e" * 12, 1)


def test_fifo_links_keep_order_and_others_reorder() -> None:
    for fifo in (True, False):
        net, scheduler, _ = _net(fifo=fifo, jitter_ms=30, p_codec=0.0)
        for seq in range(50):
            net.send(Packet(Kind.BROADCAST, 1, 2, 1, _hb(seq)))
        seqs = [p.body.seq for p in _drain(scheduler)]
        assert sorted(seqs) == list(range(50))
        assert (seqs == list(range(50))) is fifo


def test_cuts_are_directed_and_checked_on_arrival_too() -> None:
    net, scheduler, stats = _net()
    net.cut([(1, 2)])
    net.send(Packet(Kind.BROADCAST, 1, 2, 1, _hb(1)))
    net.send(Packet(Kind.BROADCAST, 2, 1, 1, _hb(2)))
    assert stats["cut"] == 1
    (packet,) = _drain(scheduler)
    assert packet.dst == 1 and net.arrives(packet)
    net.send(Packet(Kind.BROADCAST, 2, 1, 1, _hb(3)))
    net.cut([(2, 1)])  # cut while in flight
    (packet,) = _drain(scheduler)
    assert not net.arrives(packet) and stats["cut"] == 2
    net.heal()
    assert net.arrives(packet)


def test_loss_and_duplication_stop_when_the_network_turns_reliable() -> None:
    net, scheduler, stats = _net(p_drop=0.5, p_dup=0.5)
    for seq in range(100):
        net.send(Packet(Kind.BROADCAST, 1, 2, 1, _hb(seq)))
    # A client's request is never duplicated (its retries are the client's business).
    for tag in range(100):
        net.send(Packet(Kind.REQUEST, -1, 2, 1, Add(tag), ("c", 0)))
    delivered = _drain(scheduler)
    assert 30 < stats["dropped"] < 170 and stats["duplicated"] > 10
    assert len(delivered) == 200 - stats["dropped"] + stats["duplicated"]
    assert Counter(p.body.id for p in delivered if p.kind is Kind.REQUEST).most_common(1)[0][1] == 1
    net.reliable = True
    before = stats["dropped"]
    for seq in range(100):
        net.send(Packet(Kind.BROADCAST, 1, 2, 1, _hb(seq)))
    assert len(_drain(scheduler)) == 100 and stats["dropped"] == before


def test_sampled_messages_go_through_the_real_codec() -> None:
    net, scheduler, stats = _net(p_codec=1.0)
    delta = Delta(1, "e" * 12, 3, {"ключ": {"1.aaaaaaaaaaaa": (5, 2, 1, 0)}},
                  (("r1", "ключ", {"1.aaaaaaaaaaaa": (5, 0, 0, 0)}),))
    net.send(Packet(Kind.BROADCAST, 1, 2, 1, delta))
    (packet,) = _drain(scheduler)
    assert stats["codec_roundtrips"] == 1 and packet.body == delta


def test_replay_delivers_an_old_message_to_the_receivers_current_process() -> None:
    net, scheduler, stats = _net(replays=True, p_codec=0.0)
    for seq in range(200):
        net.send(Packet(Kind.BROADCAST, 1, 2, 1, _hb(seq)))
        net.send(Packet(Kind.CLIENT_REPLY, 1, -1, 0, _hb(seq)))  # never kept
    _drain(scheduler)
    assert net.replay(lambda node: 5, min_age_ms=10**6) is None  # none that old
    scheduler.at(scheduler.now_ms + 5000, lambda: None)
    _drain(scheduler)
    packet = net.replay(lambda node: 5, min_age_ms=1000)
    assert packet is not None and packet.dst == 2 and packet.life == 5
    assert stats["replayed"] == 1 and _drain(scheduler) == [packet]
