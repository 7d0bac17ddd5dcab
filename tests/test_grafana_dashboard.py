"""contrib/grafana-sipserver.json queries only metrics the /metrics page really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.internet.task import Clock

from sipserver.accounts.lockout import Lockout
from sipserver.acs.health import BackendHealth
from sipserver.observe.events import Metrics
from sipserver.observe.exchangelog import LogWriter
from sipserver.observe.exchangelog.destinations import LogFile
from sipserver.observe.exchangelog.lines import TextLines
from sipserver.observe.http import CappedFactory, StatusSources, render_metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana-sipserver.json"


def exposed(tmp_path: Path) -> set[str]:
    sources = StatusSources(
        name=lambda: "x", listeners={}, connections=lambda: 0, metrics=Metrics(),
        health=BackendHealth({}, Clock()), lockout=Lockout(5, 60, 300, clock=Clock()),
        log=LogWriter(LogFile(str(tmp_path / "log")), TextLines()),
    )  # fmt: skip
    page = render_metrics(sources, CappedFactory(None, 1))
    return set(re.findall(r"^# TYPE (\w+) ", page, re.MULTILINE))


def test_every_metric_the_dashboard_queries_is_exposed(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries.append(dashboard["templating"]["list"][1]["query"]["query"])
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for q in queries for name in re.findall(r"\bsip_\w+", q)}
    families = exposed(tmp_path)
    assert used and used <= families, used - families
    assert len(used) >= 12  # the dashboard covers most of the page, not one metric
