"""The chart's monitoring: ServiceMonitor, PrometheusRule and Grafana dashboard.

The objects are rendered with `helm template` and validated; every PromQL expression of the alerts
and the dashboard may only name metrics of the documented table, which
tests/integration/test_metrics.py checks against a real node. promtool (Debian package
`prometheus`) adds `check rules` and unit tests of the alerts where it is installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvoperator.resources import PORT_NAME, ClusterRef
from kvoperator.services import build_client_service, build_headless_service
from tests import metricsdoc

from .support import CHART, Obj, crd_index, run, validate_objects
from .test_chart import NAMESPACE, chart_crds, render, sets

DASHBOARD_FILE = CHART / "dashboards" / "kvcluster.json"
OPTIONS = {
    "serviceMonitor": "ServiceMonitor",
    "prometheusRule": "PrometheusRule",
    "dashboard": "ConfigMap",
}
ALL_ON = [f"metrics.{option}.enabled=true" for option in OPTIONS]

# Minimal structural schemas of the two Prometheus Operator kinds, for the fields the chart uses
# (unknown fields are rejected, as the API server's strict field validation would). Written for
# these tests: no CRD is downloaded.
_LABEL_NAME = "^[a-zA-Z_][a-zA-Z0-9_]*$"
_DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
SERVICE_MONITOR_SCHEMA: Obj = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    },
                },
                "selector": _LABEL_SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {"type": "string", "pattern": _LABEL_NAME},
                                        },
                                        "targetLabel": {"type": "string", "pattern": _LABEL_NAME},
                                        "action": {"enum": ["replace", "keep", "drop", "labelmap"]},
                                        "regex": {"type": "string"},
                                        "replacement": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}
PROMETHEUS_RULE_SCHEMA: Obj = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]+$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                            "properties": {"severity": {"enum": ["critical", "warning"]}},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description"],
                                            "properties": {
                                                "summary": {"type": "string", "minLength": 1},
                                                "description": {"type": "string", "minLength": 1},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        }
    },
}
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
}


def monitoring_objects(objects: list[Obj]) -> list[Obj]:
    return [
        o
        for o in objects
        if o["kind"] in ("ServiceMonitor", "PrometheusRule")
        or (o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    ]


def rendered(helm: Path, *assignments: str) -> dict[str, Obj]:
    objects = monitoring_objects(render(helm, sets(*assignments)))
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


def alert_rules(rule: Obj) -> list[Obj]:
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard_queries(dashboard: Obj, rate_interval: str = "5m") -> list[str]:
    """Every PromQL of the dashboard (panel targets, variable queries), Grafana variables filled in."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *[a-z_]+\)", var["definition"])
            assert match, var["definition"]
            exprs.append(match.group(1))
    return [re.sub(r"\$\w+", ".*", e.replace("$__rate_interval", rate_interval)) for e in exprs]


def names_problems(exprs: list[str]) -> list[str]:
    allowed = metricsdoc.series_names(metricsdoc.documented()) | metricsdoc.PROMETHEUS_SYNTHETIC
    problems = []
    for expr in exprs:
        names = metricsdoc.promql_names(expr)
        if not names:
            problems.append(f"selects no metric: {expr}")
        problems += [f"{name!r} is not exported by nodes: {expr}" for name in sorted(names - allowed)]
    return problems


# --- on and off ----------------------------------------------------------------------------


def test_monitoring_is_off_by_default(helm: Path) -> None:
    assert rendered(helm) == {}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_renders_only_its_object(helm: Path, option: str) -> None:
    objects = rendered(helm, f"metrics.{option}.enabled=true")
    assert list(objects) == [OPTIONS[option]]


def test_all_options_lint_and_validate(helm: Path) -> None:
    lint = run([helm, "lint", "--strict", CHART, "--namespace", NAMESPACE, *sets(*ALL_ON)])
    assert lint.returncode == 0, lint.output
    objects = render(helm, sets(*ALL_ON))
    assert set(rendered(helm, *ALL_ON)) == set(OPTIONS.values())
    problems = list(validate_objects(objects, {**crd_index(chart_crds()), **SCHEMAS}))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("metrics.serviceMonitor.interval=30", "interval"),
        ("metrics.serviceMonitor.namespaces={Bad_NS}", "namespaces"),
        ("metrics.prometheusRule.lagEntries=0", "lagEntries"),
        ("metrics.prometheusRule.reshapeStuckFor=soon", "reshapeStuckFor"),
        ("metrics.dashboard.namespace=Not_A_Namespace", "namespace"),
        ("metrics.dashboard.colour=blue", "colour"),
    ],
)
def test_values_schema_rejects_bad_monitoring_values(helm4: Path, assignment: str, field: str) -> None:
    result = run([helm4, "template", "t", CHART, *sets(assignment)])
    assert result.returncode != 0, f"helm template accepted {assignment}"
    assert field in result.output, result.output


# --- ServiceMonitor -------------------------------------------------------------------------


def test_service_monitor_scrapes_the_operators_headless_services(helm4: Path) -> None:
    monitor = rendered(helm4, "metrics.serviceMonitor.enabled=true")["ServiceMonitor"]
    spec = monitor["spec"]
    ref = ClusterRef(name="demo", namespace="team-a", uid="u")
    headless, client = build_headless_service(ref), build_client_service(ref)
    selector = spec["selector"]["matchLabels"]
    # Each node once: the headless Service (which lists not-ready nodes too), not the client one.
    assert selector.items() <= headless["metadata"]["labels"].items()
    assert not selector.items() <= client["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == PORT_NAME == headless["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    # job="kvcluster" (the alerts' `up{job="kvcluster"}`) and kvcluster=<name> for grouping.
    assert headless["metadata"]["labels"][spec["jobLabel"]] == "kvcluster"
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "kvcluster"
    instance_label = relabel["sourceLabels"][0].removeprefix("__meta_kubernetes_service_label_")
    assert headless["metadata"]["labels"]["app.kubernetes.io/instance"] == ref.name
    assert instance_label == "app_kubernetes_io_instance"


@pytest.mark.parametrize(
    ("assignments", "selector"),
    [
        (["watch.scope=namespaced"], {"matchNames": [NAMESPACE]}),
        (["watch.scope=namespaced", "watch.namespaces={a,b}"], {"matchNames": ["a", "b"]}),
        (["metrics.serviceMonitor.namespaces={c}"], {"matchNames": ["c"]}),
    ],
)
def test_service_monitor_follows_the_watched_namespaces(
    helm4: Path, assignments: list[str], selector: Obj
) -> None:
    objects = rendered(helm4, "metrics.serviceMonitor.enabled=true", *assignments)
    assert objects["ServiceMonitor"]["spec"]["namespaceSelector"] == selector


def test_extra_labels_reach_the_objects(helm4: Path) -> None:
    objects = rendered(
        helm4,
        *ALL_ON,
        "metrics.serviceMonitor.labels.release=prom",
        "metrics.prometheusRule.labels.release=prom",
        "metrics.dashboard.namespace=grafana",
        "metrics.dashboard.annotations.grafana_folder=kvcluster",
    )
    assert objects["ServiceMonitor"]["metadata"]["labels"]["release"] == "prom"
    assert objects["PrometheusRule"]["metadata"]["labels"]["release"] == "prom"
    meta = objects["ConfigMap"]["metadata"]
    assert meta["namespace"] == "grafana" and meta["annotations"] == {"grafana_folder": "kvcluster"}


# --- alerts and dashboard: PromQL ------------------------------------------------------------


def test_alerts_cover_what_operators_must_know(helm4: Path) -> None:
    rules = alert_rules(rendered(helm4, "metrics.prometheusRule.enabled=true")["PrometheusRule"])
    names = {r["alert"] for r in rules}
    assert {
        "KVClusterNodeDown",
        "KVClusterPartitionWithoutLeader",
        "KVClusterReplicaBehind",
        "KVClusterFollowerBehind",
        "KVClusterStorageFailed",
        "KVClusterStorageSlow",
        "KVClusterReshapeStuck",
    } <= names
    assert len(names) == len(rules)


def test_alert_thresholds_come_from_values(helm4: Path) -> None:
    rules = alert_rules(
        rendered(
            helm4,
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.lagEntries=77",
            "metrics.prometheusRule.reshapeStuckFor=2h",
        )["PrometheusRule"]
    )
    by_name = {r["alert"]: r for r in rules}
    assert by_name["KVClusterReplicaBehind"]["expr"].endswith("> 77")
    assert by_name["KVClusterReshapeStuck"]["for"] == "2h"
    assert "[2h]" in by_name["KVClusterReshapeStuck"]["expr"]


def test_alert_expressions_name_only_exported_metrics(helm4: Path) -> None:
    rules = alert_rules(rendered(helm4, "metrics.prometheusRule.enabled=true")["PrometheusRule"])
    assert names_problems([r["expr"] for r in rules]) == []


def test_dashboard_is_valid_and_queries_only_exported_metrics(helm4: Path) -> None:
    configmap = rendered(helm4, "metrics.dashboard.enabled=true")["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["kvcluster.json"].strip() == DASHBOARD_FILE.read_text().strip()
    dashboard = json.loads(configmap["data"]["kvcluster.json"])
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "kvcluster"} <= variables.keys()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
    exprs = dashboard_queries(dashboard)
    assert names_problems(exprs) == []
    # What the dashboard must show.
    used = set().union(*(metricsdoc.promql_names(e) for e in exprs))
    assert {
        "kvcluster_http_requests_total",
        "kvcluster_http_request_duration_seconds_bucket",
        "kvcluster_raft_leader_changes_total",
        "kvcluster_partition_apply_lag_entries",
        "kvcluster_raft_follower_lag_entries",
        "kvcluster_reshape_steps_completed",
        "kvcluster_reshape_steps_planned",
        "kvcluster_reshape_job_state",
    } <= used
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e for e in exprs)


def test_drift_is_caught() -> None:
    """The name check fails on a metric nodes do not export, and on broken PromQL."""
    assert names_problems(["rate(kvcluster_http_requests_count[5m])"]) != []
    with pytest.raises(Exception):  # noqa: B017 - promql-parser raises a plain ValueError-like error
        metricsdoc.promql_names("sum by (op (rate(kvcluster_http_requests_total[5m]))")


# --- promtool (Debian package prometheus), where installed ------------------------------------


ALERT_CASES = Path(__file__).with_name("alert_cases.yaml")


def test_promtool_checks_the_rules_and_the_dashboard_queries(helm4: Path, tmp_path: Path) -> None:
    rule = rendered(helm4, "metrics.prometheusRule.enabled=true")["PrometheusRule"]
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    metricsdoc.require_promtool("promtool check rules")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    # The dashboard's queries as recording rules: promtool parses and type-checks each.
    recorded = [
        {"record": f"kvcluster:dashboard:{i}", "expr": e} for i, e in enumerate(dashboard_queries(dashboard))
    ]
    dash_file = tmp_path / "dashboard-rules.yaml"
    dash_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = metricsdoc.run_promtool(["check", "rules", str(rules_file), str(dash_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"promtool check rules: {result.stdout.strip()}")


def test_promtool_unit_tests_the_alerts(helm4: Path, tmp_path: Path) -> None:
    rule = rendered(helm4, "metrics.prometheusRule.enabled=true")["PrometheusRule"]
    rules = {r["alert"]: r for r in alert_rules(rule)}
    metricsdoc.require_promtool("promtool test rules")
    cases = yaml.safe_load(ALERT_CASES.read_text())["cases"]
    assert {case["alert"] for case in cases} == set(rules), "every alert has a unit test"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    tests: list[dict[str, Any]] = []
    for case in cases:
        r = rules[case["alert"]]
        expected = [
            {
                "exp_labels": {**e["labels"], **r["labels"]},
                "exp_annotations": {"summary": e["summary"], "description": r["annotations"]["description"]},
            }
            for e in case["expect"]
        ]
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in case["series"].items()],
                "alert_rule_test": [
                    {"eval_time": case["at"], "alertname": case["alert"], "exp_alerts": expected}
                ],
            }
        )
    unit = tmp_path / "unit.yaml"
    unit.write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = metricsdoc.run_promtool(["test", "rules", str(unit)])
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"promtool test rules: {len(tests)} alert tests passed")


def test_notes_name_the_monitoring_objects(helm4: Path) -> None:
    def notes(*assignments: str) -> str:
        cmd = [
            helm4,
            "install",
            "kvop",
            CHART,
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            *sets(*assignments),
        ]
        result = run(cmd)
        assert result.returncode == 0, result.output
        return result.stdout.split("NOTES:", 1)[1]

    assert "Monitoring" not in notes()
    text = notes(*ALL_ON)
    for kind, suffix in (
        ("ServiceMonitor", "nodes"),
        ("PrometheusRule", "alerts"),
        ("ConfigMap", "dashboard"),
    ):
        assert f"{kind} {NAMESPACE}/kvop-kvcluster-operator-{suffix}" in text
