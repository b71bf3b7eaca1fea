"""The node's documented metrics (the table in docs/deployment.md) and the checks both suites share.

The integration suite proves the table equals what a real node serves; the deploy suite checks that
every PromQL expression of the chart names only metrics of the table. Together: nothing the
dashboards or alerts query can drift away from what nodes export.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric

from tests.environment import cannot_run

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"

_ROW = re.compile(r"^\| `(kvcluster_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", re.MULTILINE)
_NAME = re.compile(r"kvcluster_[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_LABEL = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
# Units Prometheus wants as base units (seconds, bytes) or that hide a scale.
_NON_BASE_UNIT = re.compile(
    r"_(ms|msec|millis|milliseconds|us|microseconds|ns|nanoseconds|minutes|hours|days"
    r"|kb|mb|gb|kilobytes|megabytes|gigabytes|percent|ratio_percent)(_|$)"
)
# Histograms must say what they count.
_HISTOGRAM_UNITS = ("_seconds", "_bytes", "_entries")
MAX_LABEL_VALUES = 64
# Series Prometheus itself makes for every target: the only non-kvcluster names a rule may use.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def documented() -> dict[str, str]:
    """Exposed metric name -> type, from the table in docs/deployment.md."""
    rows = dict(_ROW.findall(DEPLOYMENT_DOC.read_text()))
    assert rows, f"no metrics table in {DEPLOYMENT_DOC}"
    return rows


def exposed_name(family: Metric) -> str:
    """The name users see: prometheus-client's parser strips a counter's ``_total``."""
    return f"{family.name}_total" if family.type == "counter" else family.name


def series_names(documented: dict[str, str]) -> set[str]:
    """Every series name a query may select: histograms add _bucket, _count and _sum."""
    names: set[str] = set()
    for name, kind in documented.items():
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


def convention_problems(families: Iterable[Metric]) -> list[str]:
    """What breaks the Prometheus naming and labelling conventions, one line per problem."""
    problems: list[str] = []
    for f in families:
        name = exposed_name(f)
        where = f"{name} ({f.type})"
        if f.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{where}: type must be counter, gauge or histogram")
        if not _NAME.fullmatch(f.name):
            problems.append(f"{where}: not snake_case with the kvcluster_ prefix")
        if not f.documentation.strip():
            problems.append(f"{where}: no HELP text")
        if _NON_BASE_UNIT.search(f.name):
            problems.append(f"{where}: use base units (_seconds, _bytes)")
        if ("second" in f.name or "duration" in f.name) and not f.name.endswith("_seconds"):
            problems.append(f"{where}: a time must end in _seconds")
        if f.type == "counter":
            bad = {s.name for s in f.samples if not s.name.endswith("_total")}
            if bad or f.name.endswith("_total"):
                problems.append(f"{where}: counter samples must end in _total, once: {sorted(bad)}")
        elif f.name.endswith("_total"):
            problems.append(f"{where}: only counters end in _total")
        if f.type == "histogram" and not f.name.endswith(_HISTOGRAM_UNITS):
            problems.append(f"{where}: a histogram's name must end in its unit {_HISTOGRAM_UNITS}")
        values: dict[str, set[str]] = {}
        for s in f.samples:
            for label, value in s.labels.items():
                if label == "le" and f.type == "histogram":
                    continue
                values.setdefault(label, set()).add(value)
        for label, seen in values.items():
            if not _LABEL.fullmatch(label) or label in ("le", "quantile", "job", "instance"):
                problems.append(f"{where}: label {label!r} is reserved or not snake_case")
            if len(seen) > MAX_LABEL_VALUES:
                problems.append(f"{where}: label {label!r} has {len(seen)} values (high cardinality)")
    return problems


def promtool() -> str | None:
    """The promtool binary (Debian package `prometheus`), or None: it is an extra check, not a must."""
    return shutil.which("promtool")


def require_promtool(check: str) -> None:
    """Skip without promtool, or fail where every tool must be there (tests/environment.py)."""
    if promtool() is None:
        cannot_run(f"promtool is not installed (Debian package prometheus): {check} cannot run")


def run_promtool(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def promql_names(expr: str) -> set[str]:
    """Metric names an expression selects (a syntax error raises), by walking promql-parser's AST."""
    import promql_parser

    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or "")
            return
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                visit(child)
        for child in getattr(node, "args", None) or ():
            visit(child)

    visit(promql_parser.parse(expr))
    return names
