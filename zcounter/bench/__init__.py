"""``zcounter-bench`` (``bin/bench``): measure fresh local zcounter clusters against
baselines, in one run on this machine, and say which targets are met.

Everything runs on loopback in one invocation, so the figures are comparable with each
other (not with other machines).  The method, kept from zcounter 0.1 (WRITEUP.md
section 7):

* **Systems started first, measurements interleaved.**  A zcounter cluster (three real
  ``python -m zcounter.cli node`` processes, default settings, temporary data
  directories), the echo ceiling and Redis (``appendfsync always`` and ``everysec``)
  are all started before the first measurement; each measurement then runs on every
  system back to back, so a noisy stretch of this shared machine hurts all alike.
* **Ratios beside absolute figures.**  Every zcounter figure is printed with each
  baseline's and zcounter / baseline.  Node CPU per operation (``/proc/PID/stat``) is
  printed too: on a shared machine it is the stable figure for before/after comparisons.
* **Throughput** is a closed loop: a raw DEALER keeps ``window`` requests in flight
  (correlation ids, no request ids, like ``INCR``); Redis gets pipelines of the same depth.
* **Latency** is an open loop without coordinated omission: request i is due at
  ``t0 + i / rate`` and its latency counts from then.  **Convergence**: meanwhile an
  observer per other node asks for the keys whose acknowledgement it has not yet seen
  there, until its count reaches the acknowledged one.
* **Replication cost**: the nodes' ``peer_messages_sent`` / ``peer_bytes_sent`` per
  acknowledged increment; **memory**: ``VmRSS`` at start and after a soak;
  **start-up**: process start to the first answered ``ping``; **commit floor**: one
  SQLite commit against a raw append + ``fdatasync`` on the same file system.
* **Keys** (``--keys N --dist uniform|zipf``): requests name ``k0`` .. ``k{N-1}``, drawn
  from a precomputed table, so choosing a key costs one lookup on the hot path.
* **Scale** (``--scale``): a million keys against one key, on two clusters side by side
  (see :mod:`.scale`).

Layout: :mod:`.cli` the command; :mod:`.suite` the default sections; :mod:`.scale` the
million-key scenarios; :mod:`.load` the load generators; :mod:`.servers` the systems
under test; :mod:`.keys` key distributions; :mod:`.floor` the commit floor;
:mod:`.measure` OS figures and statistics; :mod:`.report` rows, targets, rendering and
JSON; :mod:`.progress` the progress display.  Local clusters are started by
:mod:`zcounter.localcluster`.
"""

from .cli import main

__all__ = ["main"]
