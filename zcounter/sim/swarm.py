"""The mix of one run, drawn from its seed ("swarm testing", as TigerBeetle's VOPR does).

A single average workload explores a single corner.  Drawing the probabilities
themselves from the seed - how lossy the network is, whether partitions, crashes, wipes
or pauses happen at all, how many keys the clients fight over, how many of them are
sessions - makes different seeds stress different parts of the protocol: one seed runs
a perfect network with one hot key and many resets, the next a lossy one with eight keys
and no resets at all.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from ..config import Settings
from .codes import CrashMode

#: Keys a run draws its key set from: short and long, ASCII and not, the 0.1 counter's
#: name, and two of exactly 256 bytes of UTF-8 (the limit), so the codec's key checks
#: see both kinds of edge.
KEY_POOL: tuple[str, ...] = (
    "default", "a", "b", "page/1", "page/2", "user:42:views", "ключ", "🙂",
    "k" * 256, "é" * 128,
)
#: Crash modes (see :mod:`.cluster`): between batches; after a commit with only a prefix
#: of the batch's messages sent; before the commit; inside the commit (a torn write);
#: and a power loss (what was not flushed is lost too).
CRASH_MODES: tuple[CrashMode, ...] = tuple(CrashMode)
#: Expiries the workload draws (ms): a few heartbeats to a few seconds.
TTLS_MS = (50, 200, 500, 1000, 2000)


def _draw_settings(rng: random.Random) -> Settings:
    """Timings other than the defaults (config.py keeps peer_timeout_s > heartbeat)."""
    heartbeat = rng.choice((0.1, 0.2, 0.5))
    return Settings(heartbeat_interval_s=heartbeat,
                    peer_timeout_s=heartbeat * rng.choice((2.5, 5)),
                    repair_interval_s=rng.choice((0.1, 0.5, 1.0)),
                    repair_check_interval_s=rng.choice((1.0, 10.0)),
                    retry_interval_s=rng.choice((0.02, 0.1, 0.3)))


@dataclass(frozen=True)
class Swarm:
    """The fault and workload mix of one run.  Times are simulated milliseconds."""

    # ---- workload
    keys: tuple[str, ...]
    clients: int
    #: Weights of increment, decrement, reset and read operations.
    mix: tuple[int, int, int, int]
    wait_weights: tuple[int, int, int]
    read_weights: tuple[int, int, int]
    #: Keys one read names at most.
    read_keys_max: int
    by_max: int
    timeouts_ms: tuple[int, ...]
    max_retries: int
    think_ms: int
    #: Share of clients that are sessions (send ``seen``, keep what replies return).
    p_session: float
    #: Other clients ask for the keys' states in replies this often (so reads can be
    #: checked against acknowledged writes).
    p_states: float
    #: Increments and decrements sent without a request id (never retried).
    p_no_rid: float
    #: Weights of Expire (every mode, PERSIST) and Ttl operations.
    expiry_mix: tuple[int, int]
    #: Share of increments and decrements sent with a ttl, and the ttls drawn (ms):
    #: short against a run, so keys expire and get new lives within a seed.
    p_ttl: float
    ttls_ms: tuple[int, ...]
    # ---- network
    p_drop: float
    p_dup: float
    base_delay_ms: int
    jitter_ms: int
    p_slow: float
    slow_ms: int
    #: True: every link delivers in order (TCP); False: messages overtake each other.
    fifo: bool
    #: Share of messages round-tripped through the real wire codec.
    p_codec: float
    # ---- nemesis
    #: Mean gap between fault actions; 0 disables the nemesis.
    nemesis_ms: int
    partitions: bool
    crash_modes: tuple[CrashMode, ...]
    max_wipes: int
    pauses: bool
    #: Old node-to-node messages delivered again seconds later (:meth:`.network.Network.replay`).
    replays: bool
    #: Some crashes keep a node down for several ``gc_grace_s``: it comes back with the
    #: data it had, after its peers' graves of what it held are gone.
    long_downtimes: bool
    # ---- clocks
    #: Node wall clocks differ by up to ``max_clock_skew_s`` (constant offsets).
    wall_skew: bool
    #: Node clocks start at different readings (monotonic clocks share no origin).
    skew: bool
    #: Node clock resolution: 1 ms, or coarse like Windows' 15.6 ms monotonic clock.
    clock_res_ms: int
    #: The runtime polls at least this often (its MAX_POLL_S); None: only at deadlines.
    poll_cap_ms: int | None
    # ---- the nodes' tunables: the defaults, or timings drawn around them
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def draw(cls, rng: random.Random) -> Swarm:
        def weights() -> tuple[int, int, int]:
            return (rng.randint(0, 4), rng.randint(0, 4), rng.randint(1, 4))

        faults = rng.random() < 0.9
        n_keys = rng.choice((1, 1, 2, 3, 4, 8))
        crashes = faults and rng.random() < 0.7
        modes = tuple(m for m in CRASH_MODES if m is CrashMode.CLEAN or rng.random() < 0.6)
        return cls(
            keys=tuple(rng.sample(KEY_POOL, n_keys)),
            clients=rng.randint(1, 6),
            mix=(rng.randint(1, 4), rng.randint(0, 3), rng.choice((0, 0, 1, 1, 2)),
                 rng.randint(0, 4)),
            wait_weights=weights(),
            read_weights=weights(),
            read_keys_max=rng.randint(1, 3),
            by_max=rng.choice((1, 5, 1000, 2**32)),
            timeouts_ms=tuple(sorted(rng.sample((150, 300, 600, 1000, 2000), 2))),
            max_retries=rng.randint(0, 2),
            think_ms=rng.choice((0, 10, 100)),
            p_session=rng.choice((0.0, 0.5, 1.0)),
            p_states=rng.choice((0.0, 0.5, 1.0)),
            p_no_rid=rng.choice((0.0, 0.0, 0.3)),
            p_drop=rng.choice((0.0, 0.01, 0.05, 0.2)) if faults else 0.0,
            p_dup=rng.choice((0.0, 0.01, 0.1)) if faults else 0.0,
            base_delay_ms=rng.randint(1, 5),
            jitter_ms=rng.choice((0, 5, 30)),
            p_slow=rng.choice((0.0, 0.02, 0.1)) if faults else 0.0,
            slow_ms=rng.choice((100, 400)),
            fifo=rng.random() < 0.5,
            p_codec=rng.choice((0.0, 0.02, 0.2)),
            nemesis_ms=rng.choice((150, 400, 1200)) if faults else 0,
            partitions=rng.random() < 0.7,
            crash_modes=modes if crashes else (),
            max_wipes=rng.choice((0, 0, 1, 2)),
            pauses=rng.random() < 0.3,
            skew=rng.random() < 0.5,
            clock_res_ms=rng.choice((1, 1, 1, 16, 100)),
            poll_cap_ms=rng.choice((None, 100)),
            settings=_draw_settings(rng) if rng.random() < 0.5 else Settings(),
            # Drawn last: the fields above keep the values they had for each seed.
            replays=faults and rng.random() < 0.5,
            long_downtimes=crashes and rng.random() < 0.3,
            wall_skew=rng.random() < 0.7,
            expiry_mix=(rng.choice((0, 1, 1, 2)), rng.choice((0, 1, 2))),
            p_ttl=rng.choice((0.0, 0.3, 0.8, 1.0)),
            ttls_ms=tuple(sorted(rng.sample(TTLS_MS, 2))),
        ).with_collection(rng)

    def with_collection(self, rng: random.Random) -> Swarm:
        """Collection timings short against a run (seconds of simulated time), so that
        graves expire and messages grow too old within a seed; the config's rule
        ``gc_grace_s >= max_message_age_s + 2 * max_clock_skew_s`` kept."""
        skew = rng.choice((0.2, 0.5, 1.0))
        age = rng.choice((1.0, 2.0))
        return dataclasses.replace(self, settings=dataclasses.replace(
            self.settings, gc_interval_s=rng.choice((0.1, 0.2, 0.5)), max_clock_skew_s=skew,
            max_message_age_s=age, gc_grace_s=age + 2 * skew + rng.choice((0.0, 1.0))))

    @classmethod
    def calm(cls, **changes: object) -> Swarm:
        """No random faults at all, for scripted scenarios (``changes`` vary it)."""
        base = cls(keys=("a", "b"), clients=3, mix=(3, 1, 0, 2), wait_weights=(1, 1, 1),
                   read_weights=(1, 1, 1), read_keys_max=2, by_max=5, timeouts_ms=(300, 1000),
                   max_retries=1, think_ms=10, p_session=0.5, p_states=0.5, p_no_rid=0.0,
                   p_drop=0.0, p_dup=0.0, base_delay_ms=2, jitter_ms=5, p_slow=0.0,
                   slow_ms=100, fifo=True, p_codec=0.1, nemesis_ms=0, partitions=False,
                   crash_modes=(), max_wipes=0, pauses=False, replays=False,
                   long_downtimes=False, wall_skew=False, expiry_mix=(0, 0), p_ttl=0.0,
                   ttls_ms=(500, 2000), skew=False, clock_res_ms=1,
                   poll_cap_ms=None)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def max_delay_ms(self) -> int:
        return self.base_delay_ms + self.jitter_ms + (self.slow_ms if self.p_slow else 0)

    def brief(self) -> str:
        """One line for logs: the fields, with the keys abbreviated."""
        keys = ",".join(k if len(k) <= 12 else f"{k[:4]}..({len(k.encode())}B)"
                        for k in self.keys)
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in dataclasses.fields(self) if f.name not in ("keys", "settings"))
        default = Settings()
        tuned = ", ".join(f"{f.name}={getattr(self.settings, f.name)}"
                          for f in dataclasses.fields(Settings)
                          if getattr(self.settings, f.name) != getattr(default, f.name))
        return f"keys=[{keys}], {fields}, settings=({tuned or 'defaults'})"
