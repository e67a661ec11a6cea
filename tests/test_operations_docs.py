"""
docs/alerts.yml parses as Prometheus rule groups and names only metrics
the server exposes; docs/operations.md documents every exposed metric.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HeartbeatPolicy
from twisted_hub.testing import HubTestServer

from ._docs import ROOT
from .helpers.hubs import WorkLog, work_hub

_METRIC = re.compile(r"\btwisted_hub_[a-z_]+\b")


def exposed_names() -> set[str]:
    """Family and sample names a server with metrics exposes after one connection and one call."""
    server = HubTestServer(
        [work_hub(WorkLog())], heartbeat=HeartbeatPolicy(enabled=True, interval=1.0), metrics=True, resume=True,
    )
    conn = server.connect("work")
    conn.client.call("plain", 1)
    server.advance(2.0)
    assert server.factory.metrics is not None
    names: set[str] = set()
    for family in server.factory.metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    # ... and the Python client's own metrics (ClientMetrics), in a registry of their own
    from prometheus_client import CollectorRegistry

    from twisted_hub.metrics import ClientMetrics

    client_registry = CollectorRegistry()
    ClientMetrics(client_registry).disconnects.labels("normal")
    for family in client_registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    # ... and what twistd hub --workers adds to the combined /metrics
    from twisted_hub._ops.workers import combine_metrics

    for family in combine_metrics([None]):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


class AlertRulesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rules: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())

    def test_structure(self) -> None:
        """Each rule has an alert name, an expression, a duration, a severity and a summary."""
        [group] = self.rules["groups"]
        self.assertEqual(group["name"], "twisted-hub")
        alerts = [rule["alert"] for rule in group["rules"]]
        self.assertEqual(len(alerts), len(set(alerts)))
        for rule in group["rules"]:
            self.assertEqual(set(rule), {"alert", "expr", "for", "labels", "annotations"}, rule["alert"])
            self.assertRegex(rule["for"], r"^\d+[smh]$")
            self.assertIn(rule["labels"]["severity"], {"warning", "critical"})
            self.assertIn("summary", rule["annotations"])
            self.assertEqual(rule["expr"].count("("), rule["expr"].count(")"), rule["alert"])

    def test_the_issue_topics_are_covered(self) -> None:
        """Timeout rate, latency p99, slow consumers, reconnect storms and a lost backplane each have a rule."""
        exprs = {rule["alert"]: rule["expr"] for rule in self.rules["groups"][0]["rules"]}
        self.assertIn("twisted_hub_server_heartbeat_timeouts_total", exprs["HubHeartbeatTimeouts"])
        self.assertIn("histogram_quantile(0.99", exprs["HubHeartbeatLatencyHigh"])
        self.assertIn("twisted_hub_slow_consumer_closes_total", exprs["HubSlowConsumers"])
        self.assertIn("twisted_hub_connects_total", exprs["HubReconnectStorm"])
        self.assertIn("twisted_hub_backplane_connected", exprs["HubBackplaneDown"])

    def test_every_metric_named_exists(self) -> None:
        """Every twisted_hub_* name in the rules and in docs/operations.md is exposed by the server."""
        exposed = exposed_names()
        for path in ("docs/alerts.yml", "docs/operations.md"):
            named = set(_METRIC.findall((ROOT / path).read_text()))
            self.assertTrue(named)
            self.assertEqual(named - exposed, set(), path)

    def test_every_metric_is_documented(self) -> None:
        """docs/operations.md's table names every metric family the server exposes."""
        documented = set(_METRIC.findall((ROOT / "docs" / "operations.md").read_text()))
        server = HubTestServer([work_hub(WorkLog())], metrics=True)
        assert server.factory.metrics is not None
        families = {family.name for family in server.factory.metrics.registry.collect()}
        counters = {f.name for f in server.factory.metrics.registry.collect() if f.type == "counter"}
        missing = {name for name in families if name not in documented and f"{name}_total" not in documented}
        self.assertEqual(missing, set())
        self.assertTrue(counters)


class PromtoolTests(SynchronousTestCase):
    def test_promtool_accepts_the_rules(self) -> None:
        """Prometheus's own checker (promtool, Debian's prometheus package; .ci/run installs it) accepts docs/alerts.yml."""
        import shutil
        import subprocess

        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing: apt-get install prometheus (.ci/run does)")
        assert promtool is not None
        done = subprocess.run(
            [promtool, "check", "rules", str(ROOT / "docs" / "alerts.yml")], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("SUCCESS: 6 rules found", done.stdout)

    def test_backplane_alert_fires(self) -> None:
        """promtool test rules: HubBackplaneDown fires for the node whose backplane is down for a minute, not the other."""
        import json
        import shutil
        import subprocess
        import tempfile
        from pathlib import Path

        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing: apt-get install prometheus (.ci/run does)")
        assert promtool is not None
        rules = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
        [rule] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "HubBackplaneDown"]
        annotations = {
            "summary": rule["annotations"]["summary"].replace("{{ $labels.instance }}", "a"),
            "description": rule["annotations"]["description"],
        }
        test = {
            "rule_files": [str(ROOT / "docs" / "alerts.yml")],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [
                    {"series": 'twisted_hub_backplane_connected{instance="a"}', "values": "1 0 0 0"},
                    {"series": 'twisted_hub_backplane_connected{instance="b"}', "values": "1 1 1 1"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "HubBackplaneDown", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "HubBackplaneDown", "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "instance": "a"}, "exp_annotations": annotations},
                    ]},
                ],
            }],
        }
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "test.yml"
            path.write_text(json.dumps(test))  # JSON is YAML
            done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
