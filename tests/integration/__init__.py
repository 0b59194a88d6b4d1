"""Tests of the running system: real node processes (and real clients, the CLI included)
on loopback ports.  Shared helpers live in ``tests/harness.py``."""
