"""The RESP door's dispatch table (zcounter.protocol.resp.dispatch): one handler per
command of the command table, each in exactly one family module."""

from __future__ import annotations

import pytest

from zcounter.protocol.resp import dispatch
from zcounter.protocol.resp.commands import BY_NAME


def test_every_command_has_one_handler_in_one_family() -> None:
    assert dispatch.HANDLERS.keys() == BY_NAME.keys()
    owners = {name: family.__name__ for family in dispatch.FAMILIES
              for name in family.HANDLERS}
    assert len(owners) == sum(len(f.HANDLERS) for f in dispatch.FAMILIES)
    for name, handler in dispatch.HANDLERS.items():
        assert handler.__module__ == owners[name]


def test_a_command_without_a_handler_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BY_NAME, "flushall", BY_NAME["dbsize"])
    with pytest.raises(RuntimeError, match="commands without a handler: \\['flushall'\\]"):
        dispatch._table()


def test_a_command_in_two_families_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    family = dispatch.FAMILIES[0]
    monkeypatch.setitem(family.HANDLERS, "get", family.HANDLERS["ping"])
    with pytest.raises(RuntimeError, match="handles \\['get'\\] again"):
        dispatch._table()
