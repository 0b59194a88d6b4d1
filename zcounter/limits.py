"""Every bound on what input may make a node allocate or do, in one place (issue 19).

TigerBeetle's rule: every allocation and every unit of work driven by a connection is
bounded *before* it is made.  Each door imports its limits from here; the ones a user
might need to change are also fields of :class:`zcounter.config.Settings` (``[settings]``
in the cluster file), whose defaults are the constants below.  README.md ("Limits") and
WRITEUP.md ("Hostile input") list them with what each door does at each limit.

Sections, one per door: keep each door's limits in its own section.
"""

from __future__ import annotations

# ---------------------------------------------------------------- file descriptors
# The node's descriptors are a budget (zcounter/runtime/fdbudget.py): at start the soft
# RLIMIT_NOFILE is raised to the hard one, what is open then is counted, the reserves
# below are set aside, and the connection caps of the doors come out of the rest.

#: Descriptors storage may open beyond those open at start: the next log segment (made
#: by a thread while the current one is open), a directory opened to fsync it, SQLite's
#: rollback/statement journals and temp files during a checkpoint.  A node at rest holds
#: 3 of storage's (segment, database, its WAL); 16 leaves room for every transient one.
FD_RESERVE_STORAGE = 16
#: Per peer: our DEALER's and SUB's connections to it, its DEALER's and SUB's to us, and
#: one reconnection of each in flight (a restarted peer's new connection arrives before
#: the old one is reaped).
FD_RESERVE_PER_PEER = 8
#: Everything else, as Redis's CONFIG_MIN_RESERVED_FDS (32): lazy imports, the process
#: collector reading /proc, the descriptor a refused connection holds while it is told
#: why, logging handlers reopened.
FD_RESERVE_SLACK = 32
#: Connections the PUB socket holds beyond two per peer (a restarted peer's new one
#: before its old one is reaped); nobody but the peers subscribes.  Beyond, like the
#: ROUTER beyond the native clients' room, a new connection is shut down at once
#: (zcounter/runtime/zmqcap.py: libzmq itself accepts without any cap).
PUB_SPARE_CONNECTIONS = 8
#: A connection to the ROUTER or the PUB that has not completed its ZeroMQ handshake
#: (greeting, CurveZMQ, ZAP) within this long is closed by libzmq (HANDSHAKE_IVL; its
#: default, 30 s, let idle raw TCP connections hold the native door's room that long).
#: A handshake takes milliseconds, CurveZMQ and ZAP included.
HANDSHAKE_TIMEOUT_MS = 5000
#: The RESP door gets at most this share of the descriptors left for connections; the
#: rest stays for native clients, whose connections libzmq accepts without any cap.
FD_RESP_SHARE = 0.5
#: Fewer descriptors than this left for connections: the node refuses to start (a
#: ConfigError saying to raise ``ulimit -n``) rather than run unable to serve anyone.
FD_MIN_FOR_CONNECTIONS = 16
#: After a failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM) a door stops polling its
#: listener for this long, doubling at each failure in a row up to the maximum, instead
#: of spinning on a listener that stays readable.  Before: ~14,500 "accept failed" lines
#: a second, and clients of the other doors timed out (300 idle connections at a limit
#: of 256: 72,556 log lines in 5 s, tests/integration/test_fd_budget.py).
ACCEPT_BACKOFF_FIRST_S = 0.01
ACCEPT_BACKOFF_MAX_S = 1.0


# ---------------------------------------------------------------- native door (ROUTER)


# ---------------------------------------------------------------- peers (SUB, DEALER)


# ---------------------------------------------------------------- RESP door

#: Connections at once (Redis's ``maxclients`` default), setting ``resp_max_clients``;
#: the door holds min(this, its share of the descriptor budget).  Beyond: Redis's
#: ``-ERR max number of clients reached`` and the connection is closed.
RESP_MAX_CLIENTS = 10_000


# ---------------------------------------------------------------- metrics door
# /metrics is served by one thread with a selector (zcounter/runtime/metrics.py): one
# Prometheus scrapes a node every 15 s or so; a few connections are plenty.

#: Connections at once, setting ``metrics_max_clients`` (the door holds min(this, an
#: eighth of the descriptors left for connections)).  Beyond: closed at once.
METRICS_MAX_CLIENTS = 32
#: A request head (request line and headers) must be complete within this long after
#: the connection is accepted, or the connection is closed (slow-loris).
METRICS_HEAD_TIMEOUT_S = 5.0
#: Bytes of one request head at most (h11's max_incomplete_event_size); Prometheus
#: sends ~250.  Beyond: 431 and close.
METRICS_MAX_HEAD_BYTES = 8192
#: A response must be taken by the client within this long, or the connection is
#: closed (a scraper that stops reading cannot hold the thread's buffer).
METRICS_WRITE_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- log noise

#: A cause of trouble driven by input (a failed accept, a refused connection) is logged
#: at most once per this interval, with the count since the last line.
LOG_INTERVAL_S = 10.0
