"""README.md's metrics table against what a node renders: every metric it exposes has a
row, and every name the section cites is one it exposes.

The table had drifted both ways (nine metrics without a row, a renamed counter still
listed) while each change kept the code's own tests green; this pins the docs to the code
the way tests/runtime/test_metrics.py pins the names themselves.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "protocol"))
from corelink import Link

from zcounter.runtime.metrics import NodeMetrics, _doors, _families

README = Path(__file__).resolve().parents[2] / "README.md"

#: A RESP door's figures, as ``runtime/resp.py``'s snapshot gives them.
RESP: dict[str, Any] = {
    "clients": 1, "blocked": 0, "received": 1, "rejected": 0, "protocol_errors": 0,
    "commands": {"get": 1}, "disconnects": {"eof": 1},
    "rejections": {"max_clients": 1}, "max_clients": 10}
#: The metrics door's figures (``HttpDoor.stats``).
METRICS_DOOR: dict[str, Any] = {"clients": 1, "rejections": {}, "max_clients": 32}


def _exposed() -> set[str]:
    """Every series name a node with both doors renders (counters with ``_total``)."""
    link = Link.of(3)
    m = NodeMetrics("t")
    m.publish(link.cores[1], 0.0, lambda: RESP, {"native_max_clients": 1,
                                                 "pub_max_clients": 1})
    assert m.snapshot is not None
    families = [*_families(m.snapshot), *_doors(m.snapshot, METRICS_DOOR)]
    return {f.name + ("_total" if f.type == "counter" else "") for f in families}


def _metrics_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Metrics\n")
    return text[start:text.index("\n## ", start + 1)]


def test_every_exposed_metric_has_a_row_in_readme() -> None:
    section = _metrics_section()
    missing = sorted(name for name in _exposed()
                     if not re.search(rf"`(zcounter)?{name.removeprefix('zcounter')}\b",
                                      section))
    assert not missing, f"README.md, Metrics, has no row for {missing}"


def test_every_metric_readme_names_is_exposed() -> None:
    exposed = _exposed()
    histogram = re.compile(r"_(bucket|count|sum)$")
    cited = set(re.findall(r"\bzcounter_\w+", _metrics_section()))
    unknown = sorted(name for name in cited
                     if name not in exposed and histogram.sub("", name) not in exposed
                     # the 0.2 name a row gives for the renamed counter
                     and name != "zcounter_full_syncs_total")
    assert not unknown, f"README.md, Metrics, names what no node exposes: {unknown}"
