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

#: Frames after the routing id the node reads of one message.  A request is one frame;
#: a few more still get a readable ``bad_request`` answer, and a message of more frames
#: is read to its end and dropped unanswered (``oversized_messages``), so a client cannot
#: make the loop build a list of its frames.
MAX_FRAMES_PER_MESSAGE = 4
#: Held native requests - ``confirm`` waits (Redis's WAIT), writes waiting for their
#: ``wait`` level, reads waiting for their ``read`` level or a session's catch-up - per
#: connection (routing id; a RESP connection counts as one).  Above the 1,000 keys one
#: RESP ``WAIT`` confirms at most (``MAX_WAIT_KEYS``) ...
MAX_HELD_PER_CONNECTION = 2_000
#: ... and per node.  Past either, the request is refused at once with ``busy``
#: (``held_refused``), before anything is applied.  Every tick scans the held requests
#: per peer: 300,000 held confirms on one connection took node 1 ~7 s to take in and
#: ~0.4-0.9 s per tick, until libzmq aborted (issue 19); 20,000 cost a tick 33 ms
#: (median; max 56 ms), 2,000 6 ms (``docs/measurements/held_tick.py``).
MAX_HELD_PER_NODE = 20_000
#: Bytes a connection may have sent that the node has not read - inside a message that
#: never ends, or complete messages queued faster than the node reads them - before it
#: is cut (``connections_cut``, :mod:`zcounter.runtime.watch`): for a client, eight of
#: its largest requests (1 MiB) ...
MAX_UNREAD_CLIENT_BYTES = 8 * 1024 * 1024
#: ... and, once it sent a message from a node, a peer's largest (16 MiB) and half
#: again.  Bytes on the wire: libzmq holds up to ~21x that for 1-byte frames, which the
#: watch's memory trigger (32 MiB of RSS growth) cuts short.
MAX_UNREAD_PEER_BYTES = 24 * 1024 * 1024
#: Replies queued for one connection (libzmq counts its high-water mark in messages, not
#: bytes).  A client that does not read loses the replies past it (``send_queue_full``):
#: they are dropped, never retried.  The largest window any zcounter tool keeps in flight
#: is 512 (``bin/bench --scale`` fill).
ROUTER_SNDHWM = 10_000
#: Complete messages libzmq queues from one connection: no high-water mark.  At one,
#: libzmq stops reading the connection, and a client that then resets it while a ZMTP
#: PING of its own is still in libzmq's input buffer aborts the node (libzmq #4364;
#: ``tests/integration/test_zmq_doors.py``).  ``MAX_UNREAD_CLIENT_BYTES`` bounds the
#: queue instead.
ROUTER_RCVHWM = 0
#: TCP keepalive on accepted connections (seconds idle, between probes, probes): a client
#: that vanished without a FIN is dropped after ~5 s idle.  With ``ROUTER_MAX_RETRANSMIT_MS``
#: it stands in for ZMTP heartbeats, which the ROUTER must not send (see
#: ``zcounter.runtime.sockets.tune_router``).
ROUTER_KEEPALIVE = (2, 1, 3)
#: Replies unacknowledged this long (TCP_USER_TIMEOUT) drop the connection.
ROUTER_MAX_RETRANSMIT_MS = 30_000

#: How often the connection watch (zcounter/runtime/watch.py) reads the kernel's
#: counters: one ``getsockopt`` per connection, ~2-8 us each through ctypes (timeit, on
#: a loaded 2-core machine), so 2,000 idle connections cost the loop at most ~16 ms per
#: check.
WATCH_CHECK_INTERVAL_S = 0.25
#: RSS growth since the last check that triggers one at once ...
WATCH_RSS_TRIGGER_BYTES = 32 * 1024 * 1024
#: ... and at such a check, the most stuck or flooding connection is cut if past this.
WATCH_MIN_BLAME_BYTES = 1024 * 1024


# ---------------------------------------------------------------- peers (SUB, DEALER)

#: A peer's claim that it holds more of this node's own slot than this node does (lost
#: commits, or a forged state in ``none`` mode) is adopted and counted per key
#: (``own_slot_ahead``); the warning is logged at most this often.
OWN_SLOT_WARNING_INTERVAL_S = 10.0
#: Slots (node incarnations that wrote it) one key may have records of: a peer state
#: that would take a key past it is dropped and counted (``dropped_peer_messages``).
#: Legal keys have one slot per node, plus one per wipe of a node; a key of 10,000
#: slots is 360 KB packed, and a step to it unpacks and repacks them all: 11-14 ms a
#: step + flush, against 8 us for 3 slots (timeit-style loop, this 2-core machine).
MAX_SLOTS_PER_KEY = 10_000
#: Keys of one peer Fetch, Merge or their StatesReply.  Nodes never send more (pushes for
#: held waits, give-backs after a repair page and fetches for reads are all cut into
#: chunks of this size), so the decoder refuses more: a local process in ``none`` mode
#: (a peer by address) sending 200,000-key merges stalled node 1's loop for 1-2 s per
#: message and made a probe on another connection time out (``bin/fuzz --attack-mix``,
#: 2026-12-07); 5,000 keys are a few tens of ms.
MAX_KEYS_PER_PEER_MESSAGE = 5_000


# ---------------------------------------------------------------- RESP door
# What one RESP connection may make the node hold or do (zcounter.protocol.resp).  The
# door checks every ``*N`` and ``$N`` header itself (resp/framing.py) before hiredis sees
# the bytes, so hiredis never allocates for a length it was merely told.

#: Connections at once (Redis's ``maxclients`` default), setting ``resp_max_clients``;
#: the door holds min(this, its share of the descriptor budget).  Beyond: Redis's
#: ``-ERR max number of clients reached`` and the connection is closed.
RESP_MAX_CLIENTS = 10_000

#: TLS: a connection whose handshake has not finished this long after its accept is closed
#: (``Settings.resp_tls_handshake_timeout_s``).  A half-open handshake holds a descriptor
#: and 45 KiB of node RSS (400 of them: +18 MiB; a plaintext idle connection: ~0), while a
#: new connection's handshake and first PING take 1.7 ms on loopback (median of 7 rounds of
#: 200, docs/measurements/resp_tls_cost.py): 5 s leaves room for a slow network.
RESP_TLS_HANDSHAKE_TIMEOUT_S = 5.0
#: A failed or late TLS handshake, or a TLS error, is logged at most once per cause per this
#: interval, with the count of those left unlogged (a scanner must not flood the log).
RESP_TLS_LOG_INTERVAL_S = 10.0

#: Bytes of one argument (``$N``); Redis's ``proto-max-bulk-len`` is 512 MB, but the
#: door's longest useful argument is a pattern or an ECHO: keys are at most 256 bytes.
#: Setting ``resp_max_argument_bytes``.
RESP_MAX_ARGUMENT_BYTES = 64 * 1024
#: Bytes of one command as sent, headers included: also the most one connection keeps of
#: an unfinished command.  MGET/DEL of 1,000 keys of 256 bytes is 270 KB.  Setting
#: ``resp_max_command_bytes``.
RESP_MAX_COMMAND_BYTES = 1024 * 1024
#: Words of one command (``*N``): past it the command is a protocol error and the
#: connection closes (hiredis allocates the array's list at its header: 16,384 words is
#: 128 KB of list, 0.6 MB with the words' objects).
RESP_MAX_ARGUMENTS = 16_384
#: Keys of one MGET/EXISTS/DEL: past it the command is answered with an error (the
#: connection stays).  Measured on the project's 2-core machine with the in-memory 3-node
#: link of tests/protocol (keys of 209 bytes, all live; 3 runs): 1,000 keys cost the loop
#: 1.8-6 ms (MGET, EXISTS) and 7.5-16 ms (DEL: a Reset per key) to handle, plus 2.3-2.9 /
#: 22-49 ms at the batch's end (in-memory replication to two peers included); 10,000
#: keys cost 50-125 ms and 270 ms + 640 ms.  Setting ``resp_max_keys_per_command``.
RESP_MAX_KEYS_PER_COMMAND = 1000
#: Before AUTH, when a password is set: Redis's own bounds (networking.c, "unauthenticated
#: multibulk length" past 10 words, "unauthenticated bulk length" past 16 KiB).
RESP_MAX_UNAUTHENTICATED_ARGUMENTS = 10
RESP_MAX_UNAUTHENTICATED_ARGUMENT_BYTES = 16 * 1024
#: Bytes of a ``*N``/``$N`` line, CRLF included: 20 digits and a sign fit; Redis refuses
#: a longer one as "too big mbulk/bulk count string".
RESP_MAX_HEADER_BYTES = 32
#: Unfinished-command bytes all connections of a node keep together.  Past it, a
#: connection whose unfinished command has grown beyond one read (64 KiB) is refused and
#: closed: 2,000 connections each sending 4 MB partial commands would otherwise hold 8 GB.
RESP_MAX_INPUT_BYTES_PER_NODE = 64 * 1024 * 1024
RESP_INPUT_FLOOR_BYTES = 64 * 1024
#: Bytes of a SCAN/KEYS ``MATCH`` pattern.  The matcher is linear (resp/glob.py); the bound
#: caps its compile time and its cache (256 patterns).
RESP_MAX_PATTERN_BYTES = 1024
#: Keys one SCAN/KEYS page lists when its pattern is slow to match (a ``?`` or a class
#: between stars, resp/glob.py ``is_slow``): at the measured worst, 43 us a key, a page
#: costs the loop 43 ms (10,000 keys, the page of other patterns: 0.43 s).
RESP_MAX_SLOW_MATCH_PAGE = 1000
#: Bytes of one KEYS reply.  KEYS gathers every page before it answers, so its reply was
#: bounded only by the keyspace (10M keys: GBs built before the runtime cut the connection
#: at its output bound); past this it answers an error instead (use SCAN), the connection
#: stays.  The same figure as ``RESP_MAX_OUTPUT_BYTES``: a longer reply was never sent.
RESP_MAX_KEYS_REPLY_BYTES = 64 * 1024 * 1024
#: Bytes of a connection name (CLIENT SETNAME, HELLO SETNAME) and of each client-info
#: string (CLIENT SETINFO LIB-NAME / LIB-VER), kept for the connection's life.
RESP_MAX_CLIENT_STRING_BYTES = 256
#: Commands parsed and not yet answered; past this the runtime stops reading the socket
#: until replies have left (the client's own sends then block: TCP backpressure).
RESP_MAX_PIPELINE = 1024
#: Core requests one connection hands to the core per poll cycle: a DEL of 10,000 keys
#: (10,001 requests) is spread over 10 cycles, so other connections are served between.
RESP_MAX_REQUESTS_PER_CYCLE = 1024
#: Core requests one connection may have queued, not yet handed to the core, before the
#: runtime stops reading it (``Session.backlog`` then counts as full).  Commands in flight
#: alone did not bound them: 1,024 pipelined DELs of 1,000 keys queued 1,025,024 requests
#: and their answer handlers, 648 MB (tracemalloc, this 2-core machine), since the core
#: takes 1,024 a cycle while a cycle reads up to 4 x 64 KiB.  Past the bound, one read
#: more can add up to ~9,000 (measured 6,552 to 9,000 for 64 KiB of DELs of short keys).
RESP_MAX_QUEUED_REQUESTS = 4 * RESP_MAX_REQUESTS_PER_CYCLE
#: SCAN cursors a connection may hold open (the least recently used is forgotten first).
RESP_MAX_CURSORS = 64
#: Keys a connection may write between WAITs that confirm them everywhere: one WAIT asks
#: the core for at most this many confirmations, whatever the number of writes.
RESP_MAX_WAIT_KEYS = 1000
#: Confirmations the door of one node keeps in the core at once (all connections,
#: closed ones included until their WAIT's timeout); a WAIT that would pass it is refused.
RESP_MAX_WAIT_CONFIRMS_PER_NODE = 10_000
#: WAIT's timeout, in ms, when the client asks for none (0) or for more.
RESP_MAX_WAIT_MS = 60_000
#: Wrong passwords (AUTH, HELLO AUTH) one connection may try; the next failure is answered
#: and the connection closed, so guessing costs a new connection per few tries.
RESP_MAX_AUTH_FAILURES = 3
#: After the Nth wrong password on a connection, the door neither reads from it nor sends
#: to it (the WRONGPASS reply included) for this long times 2**(N-1): 0.1, 0.2, 0.4 s,
#: then the 4th failure is answered after 0.8 s and the connection closed.  One connection
#: guessing in turn gets 4 tries in ~1.5 s instead of ~1 ms, and every guessing
#: connection holds a RESP slot meanwhile, so the door's cap bounds the guess rate.
RESP_AUTH_FAILURE_DELAY_S = 0.1
#: How long the core may take over a request of the door.
RESP_REQUEST_TIMEOUT_MS = 5000

# The runtime side of the RESP door (zcounter/runtime/resp.py, respconn.py: per cycle).
#: Bytes read from one connection per read, and reads per poll cycle at most (fairness
#: between clients; also the slack of the command bound: one read past it at most).
RESP_READ_BYTES = 64 * 1024
RESP_READS_PER_CYCLE = 4
#: Above this much unsent output a connection is not read (backpressure).
RESP_PAUSE_OUTPUT_BYTES = 1024 * 1024
#: Above this much unsent output a connection is closed at once: only one huge reply can
#: get here, since reading pauses far below it (KEYS is bounded to the same figure).
RESP_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
#: Connections accepted per poll cycle at most.
RESP_ACCEPTS_PER_CYCLE = 64
#: Bytes handed to one ``SSL_write`` at most (four full TLS records).
RESP_TLS_SEND_BYTES = 64 * 1024

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
