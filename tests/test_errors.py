"""The error hierarchy (zcounter/errors.py): typed codes, one root."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import zcounter
from zcounter import Busy, RequestRefused, SessionBehind, ZCounterError, errors
from zcounter.errors import ErrorCode
from zcounter.model.pncounter import Overflow
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


#: Exception classes of the package that are not ZCounterErrors, and why (errors.py says
#: so too): AssertionErrors reporting a bug in zcounter, which code catching ZCounterError
#: around client calls (zcounter.fuzz.live) must never swallow, and the simulated disk's
#: Crash, a process death that no handler of the code under test may survive.
FOUND_BUGS = {"zcounter.sim.oracle.SimFailure", "zcounter.fuzz.targets.TargetFailed"}
NOT_ZCOUNTER_ERRORS = FOUND_BUGS | {"zcounter.sim.files.Crash"}


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package.  Files, not
    pkgutil.walk_packages, which skips zcounter/protocol (a namespace package: no
    ``__init__.py``); ``__main__`` modules run a command when imported and define none."""
    root = Path(zcounter.__file__).parent
    found: dict[str, type[BaseException]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == name):
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_the_package_defines_is_a_zcounter_error() -> None:
    classes = _exception_classes()
    # The walk finds what it must (a broken walk would pass vacuously).
    assert {"zcounter.runtime.storage.StorageError", "zcounter.runtime.storage.log.LogError",
            "zcounter.protocol.resp.framing.FrameError", "zcounter.model.pncounter.Overflow",
            *NOT_ZCOUNTER_ERRORS} <= set(classes)
    outside = {name for name, cls in classes.items() if not issubclass(cls, ZCounterError)}
    assert outside == NOT_ZCOUNTER_ERRORS
    assert all(issubclass(classes[name], AssertionError) for name in FOUND_BUGS)


def test_every_error_is_named_in_the_errors_module_docstring() -> None:
    doc = errors.__doc__ or ""
    missing = [name for name in _exception_classes() if name.rsplit(".", 1)[-1] not in doc]
    assert missing == []


def test_overflow_is_still_a_value_error() -> None:
    assert issubclass(Overflow, ValueError) and issubclass(Overflow, ZCounterError)
