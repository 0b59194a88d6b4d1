"""One version number (zcounter/_version.py), read without importing the client."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import zcounter
from zcounter._version import __version__


def test_the_package_and_its_metadata_say_the_version_of_version_py() -> None:
    # pyproject.toml takes it from _version.py ([tool.setuptools.dynamic]).
    assert zcounter.__version__ == __version__ == version("zcounter")


@pytest.mark.parametrize("module", ["zcounter._version", "zcounter.runtime.server",
                                    "zcounter.sim.cli", "zcounter.protocol.node"])
def test_reading_the_version_does_not_import_the_client(module: str) -> None:
    """Every ``import zcounter.x`` runs zcounter/__init__.py first: it must not load the
    client (nor, for the version alone, zmq).  A fresh interpreter, so nothing this test
    run imported counts."""
    probe = (f"import sys, {module}; "
             "print('zcounter.client' in sys.modules, 'zmq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == "False", f"importing {module} imported zcounter.client"
    if module in ("zcounter._version", "zcounter.protocol.node"):
        assert out[1] == "False", f"importing {module} imported zmq"


def test_client_is_still_importable_from_the_package() -> None:
    from zcounter import Client
    from zcounter.client import Client as Direct

    assert Client is Direct and zcounter.Client is Direct
