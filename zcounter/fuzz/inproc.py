"""Run the in-process targets for a while, in a child process watched for hangs.

The child (``python -m zcounter.fuzz.inproc DOOR SECONDS SEED DIR``) feeds its door's
target, writes each input to ``DIR/current-DOOR.bin`` before running it, and prints one
JSON line per second (inputs so far) and one per failure.  The engine is atheris
(coverage-guided libFuzzer, seeded with the grammar's inputs) when it is installed, else
the grammar plus :func:`~zcounter.fuzz.grammar.mutate` from one seed.  The parent
(:func:`run_inproc`) kills a child silent for :data:`HANG_S` and reports the input it
was running as a hang: a loop stalled by one input is a bug (issue 19).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

#: A child that prints nothing for this long is stuck in one input.
HANG_S = 10.0
#: Allowed before a child's first line (atheris instruments zcounter's code first).
START_S = 60.0
#: The child's start: under atheris, zcounter's modules are imported instrumented (only
#: those: instrumenting every loaded module took ~45 s, zcounter's alone ~2 s).
_BOOT = """
import sys
try:
    import atheris
except ImportError:
    atheris = None
if atheris is not None:
    with atheris.instrument_imports(include=["zcounter"]):
        from zcounter.fuzz import inproc, targets, grammar, known
else:
    from zcounter.fuzz import inproc
inproc._child(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), inproc.Path(sys.argv[4]))
"""
#: Distinct failures kept per door (by exception type and place).
MAX_FAILURES = 20


@dataclass
class InprocReport:
    door: str
    inputs: int = 0
    engine: str = "grammar"
    #: (what, input)
    failures: list[tuple[str, bytes]] = field(default_factory=list)


def _atheris_available() -> bool:
    try:
        importlib.import_module("atheris")
    except ImportError:
        return False
    return True


def run_inproc(door: str, seconds: float, seed: int, workdir: Path) -> InprocReport:
    """Run ``door``'s in-process target in a child for ``seconds`` (parent side)."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = InprocReport(door)
    deadline = time.monotonic() + seconds
    current = workdir / f"current-{door}.bin"
    while time.monotonic() < deadline - 1:
        left = deadline - time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _BOOT, door, f"{left:.1f}", str(seed),
                                 str(workdir)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        seed += 1
        # Instrumenting for coverage takes a while before the first input.
        last = [time.monotonic() + START_S]
        lines: list[dict[str, object]] = []

        def read(proc: subprocess.Popen[bytes] = proc, last: list[float] = last,
                 lines: list[dict[str, object]] = lines) -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                last[0] = time.monotonic()
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        hung = False
        while proc.poll() is None:
            time.sleep(0.2)
            if time.monotonic() - last[0] > HANG_S:
                hung = True
                proc.kill()
                proc.wait()
        reader.join(5)
        done = 0
        for line in lines:
            if "inputs" in line:
                done = int(line["inputs"])  # type: ignore[call-overload]
                report.engine = str(line.get("engine", report.engine))
            if "failure" in line and len(report.failures) < MAX_FAILURES:
                report.failures.append((str(line["failure"]),
                                        bytes.fromhex(str(line["input"]))))
        report.inputs += done
        if hung:
            report.failures.append((f"hang: no progress for {HANG_S:.0f} s",
                                    current.read_bytes() if current.exists() else b""))
            report.inputs += 1
    return report


# --------------------------------------------------------------------------- child


def _child(door: str, seconds: float, seed: int, workdir: Path) -> None:
    from .grammar import GRAMMARS, RandomChooser, mutate
    from .known import open_finding
    from .targets import IN_PROCESS

    target = IN_PROCESS[door]
    current = os.open(workdir / f"current-{door}.bin", os.O_RDWR | os.O_CREAT, 0o600)
    seen: set[str] = set()
    count = [0]
    engine = "atheris" if _atheris_available() else "grammar"
    last_print = [time.monotonic()]

    def emit(obj: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def one(data: bytes) -> None:
        os.pwrite(current, data, 0)
        os.ftruncate(current, len(data))
        count[0] += 1
        try:
            target(data)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            what = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            finding = open_finding(door, data)
            if finding is not None:
                what += f" (open finding {finding.name})"
            if what not in seen:
                seen.add(what)
                emit({"failure": f"{what}: {str(exc)[:200]}", "input": data.hex()})
        now = time.monotonic()
        if now - last_print[0] >= 1.0:
            last_print[0] = now
            emit({"inputs": count[0], "engine": engine})

    chooser = RandomChooser(random.Random(seed))
    if engine == "atheris":
        # Optional, untyped, and absent from most interpreters: imported by name.
        atheris = importlib.import_module("atheris")

        corpus = workdir / f"corpus-{door}"
        corpus.mkdir(exist_ok=True)
        for i in range(200):
            (corpus / f"seed-{i}").write_bytes(GRAMMARS[door](chooser))
        # libFuzzer exits the process at its time limit: print the count first.
        import atexit
        atexit.register(lambda: emit({"inputs": count[0], "engine": engine}))

        def test_one(data: bytes) -> None:
            with contextlib.suppress(Exception):
                one(data)  # failures are reported by ``one``, not raised to libFuzzer
        # libFuzzer writes slow, crashing and out-of-memory inputs to the current
        # directory unless told otherwise: two slow units of a 30-minute run once landed
        # at the top of the checkout and were committed.  Keep them in the work dir.
        atheris.Setup([sys.argv[0], f"-max_total_time={max(1, int(seconds))}",
                       f"-artifact_prefix={workdir}/", f"-seed={seed}", "-max_len=65536",
                       "-rss_limit_mb=4096",
                       str(corpus)], test_one)
        atheris.Fuzz()
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = GRAMMARS[door](chooser)
        if chooser.integer(0, 2) == 0:
            data = mutate(data, chooser)
        one(data)
    emit({"inputs": count[0], "engine": engine})


__all__ = ["HANG_S", "InprocReport", "run_inproc"]
