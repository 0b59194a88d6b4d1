"""Check that every Python environment CI used holds only the versions pinned in the lock.

Usage: python .ci/check_pins.py LOCK ENV_DIR [ENV_DIR ...]

For each environment (a venv or a tox environment) it asks that environment's own
interpreter for its installed distributions and its marker environment (Python version,
platform), evaluates the lock's markers against it, and fails when a distribution is not
in the lock or is at another version.  zcounter itself (installed from this checkout) is
skipped, and so are the seed packages that virtualenv or the interpreter's ensurepip put
into every environment (pip, setuptools, wheel: their versions are fixed by the pinned
virtualenv and by the interpreter), unless the lock pins them, as it does setuptools for
the build: then the pin is checked like any other.  Exit 0: all pinned; 1: a mismatch
(each printed); 2: usage.  It runs with the standard library only (issue 18).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, os, platform, sys
from importlib.metadata import distributions
impl = sys.implementation
iver = "{0.major}.{0.minor}.{0.micro}".format(impl.version)
env = {
    "implementation_name": impl.name,
    "implementation_version": iver,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
dists = sorted({(d.metadata["Name"], d.version) for d in distributions()})
print(json.dumps({"env": env, "dists": dists}))
"""

SEEDS = {"pip", "setuptools", "wheel"}
_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.*))?$")
_CLAUSE = re.compile(r"^(\w+)\s*(==|!=|<=|>=|<|>)\s*'([^']*)'$")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _clause(text: str, env: dict[str, str]) -> bool:
    match = _CLAUSE.match(text.strip())
    if match is None:
        raise ValueError(f"marker clause not understood: {text!r}")
    var, op, value = match.groups()
    have = env[var]
    if var.endswith("version"):
        a, b = _version(have), _version(value)
        if value.endswith(".*") and op in ("==", "!="):  # a prefix match: '3.11.*'
            a = a[:len(b)]
    else:
        a, b = have, value  # type: ignore[assignment]
    return {"==": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b, "<": a < b,
            ">": a > b}[op]


def marker(text: str | None, env: dict[str, str]) -> bool:
    """uv's markers: clauses joined by ``and``/``or`` (``and`` binds tighter), optionally
    in parentheses.  Enough for what `uv pip compile --universal` writes."""
    if not text:
        return True
    text = text.strip()
    if text.startswith("(") and text.endswith(")") and text.count("(") == 1:
        text = text[1:-1]
    return any(all(_clause(c.strip("() "), env) for c in part.split(" and "))
               for part in text.split(" or "))


def pins(lock: Path, env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = _LINE.match(line.strip())
        if match and marker(match.group(3), env):
            out[norm(match.group(1))] = match.group(2)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    lock = Path(argv[1])
    bad = 0
    for env_dir in map(Path, argv[2:]):
        python = env_dir / "bin" / "python"
        if not python.exists():
            continue
        probe = json.loads(subprocess.run([str(python), "-c", PROBE], check=True,
                                          capture_output=True, text=True).stdout)
        pinned = pins(lock, probe["env"])
        checked = 0
        for name, version in probe["dists"]:
            key = norm(name)
            if key == "zcounter" or (key in SEEDS and key not in pinned):
                continue
            checked += 1
            if pinned.get(key) != version:
                bad += 1
                want = pinned.get(key, "not in the lock")
                print(f"check_pins: {env_dir}: {name} {version} installed, lock: {want}")
        print(f"check_pins: {env_dir} (Python {probe['env']['python_full_version']}): "
              f"{checked} packages, all pinned" if not bad else
              f"check_pins: {env_dir}: {checked} packages checked")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
