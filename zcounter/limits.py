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


# ---------------------------------------------------------------- RESP door


# ---------------------------------------------------------------- metrics door


# ---------------------------------------------------------------- log noise
