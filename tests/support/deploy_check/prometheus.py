"""deploy/prometheus: the scrape configuration covers every service, and the alert rules are
well formed and name only metrics theodolite exports (what `promtool check` would catch, offline)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.deploy_check import promql
from tests.support.deploy_check.compose_model import environment_of, mounts, role
from tests.support.deploy_check.metrics import known_series
from tests.support.deploy_check.problems import Problem, load_yaml, shown

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
RABBITMQ_METRICS_PORT = 15692
SEVERITIES = frozenset({"critical", "warning", "info"})
CONFIG = "prometheus/prometheus.yml"


def check(deploy_dir: Path) -> list[Problem]:
    """The configuration's structure and every rule file it loads."""
    path = deploy_dir / CONFIG
    problems: list[Problem] = []
    config = load_yaml(path, problems, "prometheus.read")
    if not isinstance(config, dict):
        return problems or [Problem("prometheus.config", shown(path), "not a mapping")]
    jobs = config.get("scrape_configs") or []
    names = [job.get("job_name") for job in jobs if isinstance(job, dict)]
    if len(names) != len(jobs) or None in names:
        problems.append(Problem("prometheus.config", shown(path), "every scrape_config needs a job_name"))
    for name in sorted({str(n) for n in names if names.count(n) > 1}):
        problems.append(Problem("prometheus.config", shown(path), f"job_name {name!r} is used twice"))
    for rule_file in config.get("rule_files") or []:
        problems += check_rules(path.parent / rule_file)
    return problems


def check_rules(path: Path) -> list[Problem]:
    """One rule file: groups of alerts (or recordings) with a known-metric expression each."""
    problems: list[Problem] = []
    document = load_yaml(path, problems, "prometheus.read")
    where = shown(path)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        return problems or [Problem("prometheus.rules", where, "no `groups:` list")]
    group_names: set[str] = set()
    alert_names: set[str] = set()
    for index, group in enumerate(document["groups"]):
        at = f"{where}: groups[{index}]"
        if not isinstance(group, dict) or not group.get("name") or not isinstance(group.get("rules"), list):
            problems.append(Problem("prometheus.rules", at, "a group needs a name and a list of rules"))
            continue
        if group["name"] in group_names:
            problems.append(Problem("prometheus.rules", at, f"group {group['name']!r} is defined twice"))
        group_names.add(group["name"])
        for number, rule in enumerate(group["rules"]):
            problems += _rule(rule, f"{at}.rules[{number}]", alert_names)
    return problems


def _rule(rule: Any, at: str, alert_names: set[str]) -> list[Problem]:
    if not isinstance(rule, dict) or ("alert" in rule) == ("record" in rule):
        return [Problem("prometheus.rules", at, "a rule has exactly one of `alert` and `record`")]
    problems: list[Problem] = []
    allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"} if "alert" in rule else {"record", "expr", "labels"}
    for key in sorted(set(rule) - allowed):
        problems.append(Problem("prometheus.rules", at, f"unknown field {key!r}"))
    if "alert" in rule:
        at = f"{at} ({rule['alert']})"
        if rule["alert"] in alert_names:
            problems.append(Problem("prometheus.rules", at, "alert name used twice"))
        alert_names.add(rule["alert"])
        for key in ("for", "keep_firing_for"):
            if key in rule and not DURATION.match(str(rule[key])):
                problems.append(Problem("prometheus.rules", at, f"{key}: {rule[key]!r} is not a duration"))
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            problems.append(Problem("prometheus.rules", at, f"labels.severity must be one of {sorted(SEVERITIES)}"))
        if not (rule.get("annotations") or {}).get("summary"):
            problems.append(Problem("prometheus.rules", at, "annotations.summary is missing"))
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        return [*problems, Problem("prometheus.expr", at, "no expr")]
    scan = promql.scan(expr)
    problems += [Problem("prometheus.expr", at, error) for error in scan.errors]
    for series in sorted(scan.series - known_series()):
        problems.append(Problem("prometheus.unknown-metric", at, f"{series!r} is not a metric theodolite exports"))
    return problems


def check_compose_scraping(services: dict[str, dict[str, Any]], deploy_dir: Path, where: str) -> list[Problem]:
    """Every theodolite service of compose.yaml, and RabbitMQ, is a scrape target on its metrics port."""
    prometheus = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("prom/prometheus")]
    if not prometheus:
        return [Problem("compose.scrape", where, "no Prometheus service")]
    if not any(target == "/etc/prometheus" and (deploy_dir / source / "prometheus.yml").is_file()
               or target == "/etc/prometheus/prometheus.yml" and (deploy_dir / source).is_file()
               for source, target in mounts(prometheus[0][1])):
        return [Problem("compose.scrape", f"{where}: services.{prometheus[0][0]}", f"does not mount {CONFIG}")]
    problems: list[Problem] = []
    config = load_yaml(deploy_dir / CONFIG, problems, "prometheus.read") or {}
    targets = _targets(config)
    for name, service in services.items():
        if role(service) is not None:
            port = environment_of(service, deploy_dir).get("THEODOLITE_METRICS_PORT", "")
            if (name, port) not in targets:
                problems.append(Problem("compose.scrape", f"{where}: services.{name}",
                                        f"{CONFIG} does not scrape {name}:{port or '?'}"))
        elif str(service.get("image", "")).startswith("rabbitmq:") and (name, str(RABBITMQ_METRICS_PORT)) not in targets:
            problems.append(Problem("compose.scrape", f"{where}: services.{name}",
                                    f"{CONFIG} does not scrape RabbitMQ's plugin at {name}:{RABBITMQ_METRICS_PORT}"))
    return problems



def _targets(config: dict[str, Any]) -> set[tuple[str, str]]:
    """(host, port) of every static target and DNS-discovered name."""
    found: set[tuple[str, str]] = set()
    for job in config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                found.add((host, port))
        for dns in job.get("dns_sd_configs") or []:
            for name in dns.get("names") or []:
                found.add((str(name), str(dns.get("port", ""))))
    return found
