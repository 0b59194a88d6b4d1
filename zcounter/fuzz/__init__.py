"""Fuzzing, as a habit (issue 19): a target per parser and per door, a grammar per door,
and ``bin/fuzz``, which runs them against a live cluster while a probe checks it.

Theory of operation
-------------------
* :mod:`.targets` - in-process targets, one function taking bytes per parser: the RESP
  session, the native request codec, peer messages, the cluster file.  Each states which
  exceptions are its door working (``ProtocolError``, ``ConfigError``); anything else,
  a reply that is not valid protocol, or an input that takes too long, is a bug.
* :mod:`.grammar` - what to send: one grammar per door, driven by a chooser (a seeded
  ``random.Random`` here, Hypothesis in the tests), plus byte-level :func:`~.grammar.mutate`.
* :mod:`.inproc` - runs the in-process targets in a child process for a given time,
  coverage-guided by atheris when it is installed, else by the grammar and the mutator;
  the parent watches for crashes and hangs and keeps the input that caused them.
* :mod:`.live` - a live cluster (3 nodes, plus a 4th configured node whose sockets the
  fuzzer holds, so it can publish and answer as a peer), the senders for each door over
  real sockets, and the :class:`~.live.Probe`: a client on its own connection that
  increments and reads a key of its own every ~100 ms on each node, times each answer
  and checks the count, while RSS and liveness of each node are sampled.
* :mod:`.attacks` - the attack mix: thousands of idle connections per door and the
  hostile inputs of issue 19, under the same probe.
* :mod:`.regressions` - crashing inputs saved under ``tests/regressions/<door>/<sha>.bin``
  with a note, replayed by ``tests/fuzz/test_regressions.py``.
"""
