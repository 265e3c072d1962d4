"""Monitoring: the Grafana dashboard and the Prometheus rules in deploy/monitoring/.

Every PromQL expression (each dashboard panel's queries, each rule) may name only
metrics the code really exports: the ``prometheus_client`` metrics defined in
movierec/, gateway/, services/ and web/ (found in the source, and checked against the
registry those modules fill when imported), the client library's process and platform
metrics, Prometheus' own ``up``, and the recording rules. Label matchers must name
labels those metrics carry, and the values that name services, RPCs, callers' targets,
status codes and histogram buckets must exist. ``promtool`` (Debian's ``prometheus``
package, installed by ``make system-deps``) checks the rules and the local config, and
runs the rules' unit tests (deploy/monitoring/movierec-rules.test.yaml): each alert
seen firing and not firing. docs/operations.md must have a runbook section for each
alert. Last, a real Prometheus (``movierec.stack.monitor``, ``make monitor``) scrapes a
running stack with the rules loaded: stopping the embedder takes MovierecServiceDown
through pending to firing, starting it again resolves it.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import grpc
import prometheus_client
import pytest
from prometheus_client.utils import floatToGoString

from movierec import registry
from movierec.stack.monitor import LocalPrometheus, config, scrape_targets
from movierec.stack.process import find_binary, free_port
from movierec.stack.up import GRPC_SERVICES

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "movierec-dashboard.json"
RULES = MONITORING / "movierec-rules.yaml"
RULE_TESTS = MONITORING / "movierec-rules.test.yaml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
#: Source folders and the package each is imported as (setup.py's MAPPED).
SOURCES = {"movierec": "movierec", "services": "movierec.services",
           "gateway": "movierec.apps.gateway", "web": "movierec.apps.web"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
#: Series Prometheus writes itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added"}
#: Grafana's variables, replaced by values before an expression is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}
PROMTOOL_MISSING = "promtool not found: `make system-deps` installs Debian's prometheus"


# ------------------------------------------------------------------ what the code exports


@dataclass
class Metric:
    name: str                 # as declared (a counter's may end in _total)
    kind: str                 # Counter, Gauge, Histogram, Summary, Info, Enum
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    where: str = ""

    @property
    def family(self) -> str:
        """The family name prometheus_client registers (a counter's without _total)."""
        if self.kind == "Counter" and self.name.endswith("_total"):
            return self.name[:-len("_total")]
        return self.name

    @property
    def series(self) -> set[str]:
        """The sample names a scrape shows."""
        base = self.family
        return {"Counter": {f"{base}_total", f"{base}_created"},
                "Gauge": {base}, "Enum": {base}, "Info": {f"{base}_info"},
                "Summary": {base, f"{base}_sum", f"{base}_count", f"{base}_created"},
                "Histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count",
                              f"{base}_created"}}[self.kind]


METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
#: Families a custom collector yields at scrape time (the catalog's pool statistics):
#: declared the same way, each name a literal, labels as ``labels=``.
FAMILY_TYPES = {"CounterMetricFamily": "Counter", "GaugeMetricFamily": "Gauge",
                "HistogramMetricFamily": "Histogram", "SummaryMetricFamily": "Summary",
                "InfoMetricFamily": "Info"}
FAMILY_MODULES = {"prometheus_client", "prometheus_client.core",
                  "prometheus_client.metrics_core"}
DEFAULT_BUCKETS = prometheus_client.Histogram.DEFAULT_BUCKETS


def _constant(node: ast.AST):
    return ast.literal_eval(node)


def _buckets(node: ast.AST, path: Path) -> tuple[float, ...]:
    """A literal bucket tuple, or a module-level name (``BUCKETS``) read off the module."""
    if isinstance(node, ast.Name):
        return tuple(getattr(importlib.import_module(_module_of(path)), node.id))
    return _constant(node)


def _declared_in(path: Path) -> list[Metric]:
    """``prometheus_client.<Type>(name, doc, labels, buckets=...)`` calls in one file, and
    the ``<Type>MetricFamily(name, doc, labels=...)`` of custom collectors."""
    tree = ast.parse(path.read_text(), str(path))
    kinds = {**{t: t for t in METRIC_TYPES}, **FAMILY_TYPES}
    imported = {alias.asname or alias.name: kinds[alias.name] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module in FAMILY_MODULES
                for alias in node.names if alias.name in kinds
                and (alias.name in FAMILY_TYPES or node.module == "prometheus_client")}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in METRIC_TYPES
                and isinstance(func.value, ast.Name) and func.value.id == "prometheus_client"):
            kind = func.attr
        elif isinstance(func, ast.Name) and func.id in imported:
            kind = imported[func.id]
        else:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        assert not {"namespace", "subsystem", "unit"} & set(keywords), \
            f"{path}:{node.lineno}: spell the whole metric name out"
        name = _constant(node.args[0] if node.args else keywords["name"])
        labels = node.args[2] if len(node.args) > 2 else keywords.get(
            "labelnames", keywords.get("labels"))   # a family's keyword is "labels"
        buckets = keywords.get("buckets")
        found.append(Metric(
            name, kind, tuple(_constant(labels)) if labels is not None else (),
            tuple(float(b) for b in _buckets(buckets, path)) if buckets is not None
            else (DEFAULT_BUCKETS if kind == "Histogram" else ()),
            f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def _source_files() -> list[Path]:
    return [path for folder in SOURCES for path in sorted((ROOT / folder).rglob("*.py"))
            if "_pb2" not in path.name]


def _module_of(path: Path) -> str:
    relative = path.relative_to(ROOT)
    package = SOURCES[relative.parts[0]]
    parts = list(relative.with_suffix("").parts[1:])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


@cache
def declared() -> dict[str, Metric]:
    """Every metric the project's code declares, by family name."""
    metrics: dict[str, Metric] = {}
    for path in _source_files():
        for metric in _declared_in(path):
            assert metric.family not in metrics, f"{metric.name} declared twice"
            metrics[metric.family] = metric
    return metrics


@cache
def library_series() -> dict[str, set[str]]:
    """The client library's default process, platform and GC metrics: name -> labels."""
    reg = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=reg)
    prometheus_client.PlatformCollector(registry=reg)
    prometheus_client.GCCollector(registry=reg)
    out: dict[str, set[str]] = {}
    for family in reg.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@cache
def recorded() -> set[str]:
    yaml = pytest.importorskip("yaml")
    return {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


@cache
def series_labels() -> dict[str, set[str]]:
    """Every series name an expression may use -> the labels it may carry."""
    out: dict[str, set[str]] = {}
    for metric in declared().values():
        for name in metric.series:
            out[name] = set(metric.labels) | TARGET_LABELS | (
                {"le"} if name.endswith("_bucket") else set())
    for name, labels in library_series().items():
        out[name] = labels | TARGET_LABELS
    for name in PROMETHEUS_SERIES:
        out[name] = set(TARGET_LABELS)
    for name in recorded():
        out[name] = set(TARGET_LABELS)
    return out


@cache
def rpc_methods() -> set[str]:
    names = set()
    for service in (*registry.SERVICES, *registry.TOOLS):
        if not service.health:
            continue
        package, _, name = service.health.rpartition(".")
        pb2 = importlib.import_module(f"{package}.{name.lower()}_pb2")
        names |= {m.name for m in pb2.DESCRIPTOR.services_by_name[name].methods}
    return names


SERVICE_NAMES = {s.name for s in registry.SERVICES}


def _label_values() -> dict[str, set[str]]:
    """Label values that name something in the code: a typo there matches nothing."""
    return {"service": SERVICE_NAMES, "job": SERVICE_NAMES, "target": SERVICE_NAMES,
            "method": rpc_methods(), "code": {c.name for c in grpc.StatusCode}}


# ------------------------------------------------------------------ a small PromQL reader

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<dur>(?:\d+(?:ms|s|m|h|d|w|y))+\b)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]:@])
""", re.X)
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"} | LABEL_LISTS


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # label, op, value


@dataclass
class Parsed:
    selectors: list[Selector]
    grouping: set[str]


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        assert match, f"cannot read {expr[pos:pos + 30]!r} in {expr!r}"
        pos = match.end()
        if match.lastgroup != "ws":
            out.append((match.lastgroup, match.group()))
    return out


def _unquote(text: str) -> str:
    return text[1:-1] if text[0] == "`" else ast.literal_eval(text)


def parse(expr: str) -> Parsed:
    """The series selectors and the grouping labels (by, on, ...) of ``expr``."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in LABEL_LISTS:
            if following == "(":
                i += 2
                while toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        grouping.add(toks[i][1])
                    i += 1
            i += 1
            continue
        if kind == "ident" and (following == "(" or text in KEYWORDS
                                or (text in AGGREGATIONS and following in LABEL_LISTS)):
            i += 1
            continue
        if kind == "ident" or (kind == "op" and text == "{"):
            selector = Selector(text if kind == "ident" else "")
            i += 1 if kind == "ident" else 0
            if i < len(toks) and toks[i][1] == "{":
                i += 1
                while toks[i][1] != "}":
                    if toks[i][1] == ",":
                        i += 1
                        continue
                    (_, label), (_, op), (vkind, value) = toks[i:i + 3]
                    assert vkind == "str", f"bad matcher {label}{op}{value} in {expr!r}"
                    selector.matchers.append((label, op, _unquote(value)))
                    i += 3
                i += 1
            assert selector.metric, f"a selector without a metric name in {expr!r}"
            selectors.append(selector)
            continue
        i += 1
    return Parsed(selectors, grouping)


def _alternatives(op: str, value: str) -> list[str]:
    if op in ("=~", "!~"):
        assert re.fullmatch(r"[A-Za-z0-9_.+:-]+(\|[A-Za-z0-9_.+:-]+)*", value), \
            f"keep regex matchers to plain alternatives: {value!r}"
        return value.split("|")
    return [value]


def problems(expr: str) -> list[str]:
    """What in ``expr`` names a metric, label or value the code does not export."""
    found = []
    parsed = parse(expr)
    known = series_labels()
    values = _label_values()
    used_labels: set[str] = set()
    for selector in parsed.selectors:
        if selector.metric not in known:
            found.append(f"no metric {selector.metric!r}")
            continue
        labels = known[selector.metric]
        used_labels |= labels
        for label, op, value in selector.matchers:
            if label not in labels:
                found.append(f"{selector.metric} has no label {label!r}")
            for alternative in _alternatives(op, value):
                if label in values and alternative not in values[label]:
                    found.append(f"{selector.metric}: {label}={alternative!r} never exported")
                if label == "le":
                    metric = declared()[selector.metric[:-len("_bucket")]]
                    bounds = {floatToGoString(b) for b in metric.buckets} | {"+Inf"}
                    if alternative not in bounds:
                        found.append(f"{selector.metric}: no bucket le={alternative!r}")
    if parsed.grouping - used_labels - {"le"} and used_labels:
        found.append(f"grouping by labels no series has: {parsed.grouping - used_labels}")
    return found


# ------------------------------------------------------------------ the files


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries() -> list[tuple[str, str]]:
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels()
            for t in p.get("targets", [])]


@cache
def rules() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def promtool() -> str:
    path = find_binary("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


# ------------------------------------------------------------------ the tests


def test_metrics_found_in_the_source_are_the_registered_ones() -> None:
    """The source scan finds what importing the modules registers, and nothing else."""
    for path in _source_files():
        if "prometheus_client" in path.read_text():
            importlib.import_module(_module_of(path))
    registered = {f.name: f.type for f in prometheus_client.REGISTRY.collect()
                  if f.name.startswith("movierec_")}
    mine = {m.family: m.kind.lower() for m in declared().values()}
    assert mine == registered
    assert len(mine) >= 10


def test_the_reader_finds_metrics_labels_and_groupings() -> None:
    parsed = parse('histogram_quantile(0.99, sum by (service, le) (rate('
                   'movierec_rpc_latency_seconds_bucket{service="gateway",code=~"OK|INTERNAL"}'
                   '[$__rate_interval]))) / on () group_left () max(up offset 5m) > bool 1')
    assert [(s.metric, s.matchers) for s in parsed.selectors] == [
        ("movierec_rpc_latency_seconds_bucket",
         [("service", "=", "gateway"), ("code", "=~", "OK|INTERNAL")]), ("up", [])]
    assert parsed.grouping == {"service", "le"}
    assert problems('sum(rate(movierec_rpc_totl[5m]))') == ["no metric 'movierec_rpc_totl'"]
    assert problems('movierec_rpc_total{servce="gateway"}') == [
        "movierec_rpc_total has no label 'servce'"]
    assert problems('movierec_rpc_total{method="Recomend"}') == [
        "movierec_rpc_total: method='Recomend' never exported"]
    assert problems('movierec_rpc_latency_seconds_bucket{le="0.05"}') == [
        "movierec_rpc_latency_seconds_bucket: no bucket le='0.05'"]
    assert problems('sum by (kind) (movierec_rpc_total)') == [
        "grouping by labels no series has: {'kind'}"]


def test_every_panel_query_names_exported_metrics() -> None:
    queries = panel_queries()
    assert len(queries) >= 30
    bad = {title: found for title, expr in queries if (found := problems(expr))}
    assert bad == {}


def test_every_rule_names_exported_metrics() -> None:
    bad = {rule.get("alert") or rule["record"]: found for rule in rules()
           if (found := problems(rule["expr"]))}
    assert bad == {}


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    text = json.dumps([expr for _, expr in panel_queries()])
    for needed in ("movierec_rpc_total", "movierec_rpc_latency_seconds_bucket",
                   "movierec_gateway_cache_total", "movierec_retriever_queries_per_search",
                   "movierec_retriever_memory_searches_total", 'service=\\"embedder\\"',
                   'service=\\"catalog\\"', "movierec_gateway_catalog_version",
                   "movierec:recommend_errors:ratio_rate1h", "up{"):
        assert needed in text, needed
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert dashboard()["uid"] == "movierec-overview"


def test_panel_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query (written as a recording rule)."""
    yaml = pytest.importorskip("yaml")
    exprs = [expr for _, expr in panel_queries()]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [
        {"record": f"panel:query:{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_checks_the_rules_and_the_local_config() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", str(PROMETHEUS_CONFIG)]):
        out = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, timeout=300, cwd=MONITORING)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "SUCCESS" in out.stdout


def test_each_alert_is_seen_firing_and_not_firing() -> None:
    yaml = pytest.importorskip("yaml")
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"


def test_alerts_say_how_bad_and_where_the_runbook_is() -> None:
    doc = OPERATIONS.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in doc.splitlines() if line.startswith("#")}
    for rule in alerts():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}", rule["alert"]
        assert runbook.split("#")[1] in anchors, f"docs/operations.md lacks {rule['alert']}"
        assert rule["annotations"]["summary"]


def test_rules_and_local_config_follow_the_registry() -> None:
    """Jobs are the services' names, on their metrics ports, in config, rules and panels."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {c["job_name"]: c["static_configs"][0]["targets"] for c in config["scrape_configs"]}
    assert jobs == {s.name: [f"127.0.0.1:{s.metrics_port}"] for s in registry.SERVICES}
    every_job = "|".join(s.name for s in registry.SERVICES)
    texts = RULES.read_text() + DASHBOARD.read_text()
    for found in re.findall(r'job=~\\?"([^"\\]*)', texts):
        assert sorted(found.split("|")) == sorted(every_job.split("|")), found
    assert all(f'absent(up{{job="{name}"}})' in RULES.read_text() for name in SERVICE_NAMES)


def test_monitor_config_scrapes_the_stack_with_the_rules(tmp_path: Path) -> None:
    """`make monitor`'s config: the registry's jobs on the ports the environment sets."""
    env = {"GATEWAY_METRICS_PORT": "19460", "WEB_METRICS_PORT": "-1"}
    targets = scrape_targets(env)
    assert targets == {"catalog": "127.0.0.1:9463", "retriever": "127.0.0.1:9462",
                       "embedder": "127.0.0.1:9461", "gateway": "127.0.0.1:19460"}
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config(targets, [RULES], "1s", "1s")))
    out = subprocess.run([promtool(), "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 31 rules found" in out.stdout


# ------------------------------------------------------------------ a real Prometheus

#: The test's copy of the rules waits this long (not a minute) before firing.
FAST_FOR = "5s"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def monitored_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                    milvus_uri: str) -> Iterator:
    """The four gRPC services with their metrics on (the shared fixture turns them off)."""
    if find_binary("prometheus") is None:
        pytest.skip("prometheus not found: `make system-deps` installs Debian's prometheus")
    from stack_fixture import running_stack

    def metrics_on(env: dict[str, str], _redis) -> None:
        for service in GRPC_SERVICES:
            env[service.metrics_env] = str(free_port())

    with running_stack(tmp_path_factory.mktemp("monitored"), database_url, milvus_uri,
                       metrics_on) as stack:
        yield stack


def test_a_stopped_service_fires_its_alert_and_resolves(monitored_stack, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    rules_doc = yaml.safe_load(RULES.read_text())
    for group in rules_doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "MovierecServiceDown":
                rule["for"] = FAST_FOR
    fast_rules = tmp_path / "rules.yaml"
    fast_rules.write_text(yaml.safe_dump(rules_doc))
    targets = scrape_targets(monitored_stack.env)
    assert set(targets) == {s.name for s in GRPC_SERVICES}
    prometheus = LocalPrometheus(tmp_path / "prometheus")
    prometheus.start(config(targets, [fast_rules], "1s", "1s"))

    def up() -> dict[str, float]:
        return {r["metric"]["job"]: float(r["value"][1])
                for r in prometheus.api("query", query="up")["result"]}

    def state() -> str | None:
        for alert in prometheus.alerts():
            if alert["labels"] == {"alertname": "MovierecServiceDown", "job": "embedder",
                                   "severity": "page"}:
                return alert["state"]
        return None

    try:
        wait_until(lambda: up() == dict.fromkeys(targets, 1.0), 30, "every service scraped")
        assert state() is None
        for title, expr in panel_queries():   # each panel's query runs on real data
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            try:
                prometheus.api("query", query=expr)
            except OSError as exc:
                raise AssertionError(f"panel {title}: {exc}") from exc
        served = prometheus.api("query", query="sum by (service) (movierec_rpc_total)")
        assert {r["metric"]["service"] for r in served["result"]} == set(targets)
        monitored_stack.stop("embedder")
        seen: list[str | None] = []
        wait_until(lambda: seen.append(state()) or seen[-1] == "firing", 60,
                   "MovierecServiceDown firing")
        assert "pending" in seen, seen
        assert up()["embedder"] == 0.0
        firing = prometheus.api("query", query='ALERTS{alertstate="firing"}')["result"]
        assert {a["metric"]["alertname"] for a in firing} >= {"MovierecServiceDown"}
        monitored_stack.restart("embedder")
        wait_until(lambda: state() is None, 60, "MovierecServiceDown resolved")
        assert up()["embedder"] == 1.0
    finally:
        prometheus.stop()
