"""deploy/README.md, the ops guide, keeps up with what it documents: every metric and every
Secret the operator must create is named in it."""

from __future__ import annotations

from pathlib import Path

from tests.support.deploy_check.metrics import THEODOLITE_METRICS
from tests.support.deploy_check.pods import EXTERNAL_SECRETS
from tests.support.deploy_check.problems import Problem, shown


def check(deploy_dir: Path) -> list[Problem]:
    path = deploy_dir / "README.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return [Problem("guide.missing", shown(path), str(error))]
    problems = [Problem("guide.metric-undocumented", shown(path), f"does not explain {metric}")
                for metric in THEODOLITE_METRICS if f"`{metric}" not in text]
    for secret, keys in EXTERNAL_SECRETS.items():
        for name in (secret, *sorted(keys)):
            if name not in text:
                problems.append(Problem("guide.secret-undocumented", shown(path), f"does not tell how to create {name}"))
    return problems
