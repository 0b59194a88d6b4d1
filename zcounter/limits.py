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


# ---------------------------------------------------------------- native door (ROUTER)


# ---------------------------------------------------------------- peers (SUB, DEALER)


# ---------------------------------------------------------------- RESP door

#: TLS: a connection whose handshake has not finished this long after its accept is closed
#: (``Settings.resp_tls_handshake_timeout_s``).  A half-open handshake holds a descriptor
#: and 45 KiB of node RSS (400 of them: +18 MiB; a plaintext idle connection: ~0), while a
#: new connection's handshake and first PING take 1.7 ms on loopback (median of 7 rounds of
#: 200, docs/measurements/resp_tls_cost.py): 5 s leaves room for a slow network.
RESP_TLS_HANDSHAKE_TIMEOUT_S = 5.0
#: A failed or late TLS handshake, or a TLS error, is logged at most once per cause per this
#: interval, with the count of those left unlogged (a scanner must not flood the log).
RESP_TLS_LOG_INTERVAL_S = 10.0


# ---------------------------------------------------------------- metrics door


# ---------------------------------------------------------------- log noise
