"""The error hierarchy (zcounter/errors.py): typed codes, one root."""

from __future__ import annotations

import pytest

from zcounter import Busy, RequestRefused, SessionBehind
from zcounter.errors import ErrorCode
from zcounter.protocol import messages


def test_the_wire_names_the_same_error_code() -> None:
    assert messages.ErrorCode is ErrorCode


@pytest.mark.parametrize("exc", [RequestRefused("no", ErrorCode.OVERFLOW, 2),
                                 RequestRefused("no", "overflow", 2)])
def test_a_refusal_carries_an_error_code(exc: RequestRefused) -> None:
    assert exc.code is ErrorCode.OVERFLOW and exc.node == 2


def test_scripts_that_compare_or_print_the_code_as_a_string_keep_working() -> None:
    """``code`` was a ``str``; an ErrorCode is a str enum that prints as its value on
    every Python version (a plain (str, Enum) prints ``ErrorCode.BUSY`` from 3.11 on)."""
    busy = Busy("busy: node 1: full", ErrorCode.BUSY, 1)
    assert busy.code == "busy" and busy.code != "overflow" and busy.code in {"busy"}
    assert {"busy": 1}[busy.code] == 1 and isinstance(busy.code, str)
    assert str(busy.code) == f"{busy.code}" == "busy"
    assert "%s" % busy.code == "busy"  # noqa: UP031  (scripts written so)
    assert f"{busy.code:>6}" == "  busy"
    assert SessionBehind("x", "behind").code is ErrorCode.BEHIND


def test_a_string_that_names_no_code_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        RequestRefused("no", "refused")
