"""deploy/Dockerfile: its stages, and what each image target inherits (user, health check, installs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.deploy_check.problems import Problem, shown

# target -> (what the image must install, what it must not)
TARGETS: dict[str, tuple[str, str | None]] = {
    "planner": (r"pip install \.(\s|&|$)", r"jax\[cuda"),
    "worker-cpu": (r"pip install '\.\[ml\]'", r"jax\[cuda"),
    "worker-gpu": (r"jax\[cuda12\]", None),
}
ROOT_USERS = frozenset({"root", "0", "0:0", "root:root"})


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> dict[str, Stage]:
    """The stages of a Dockerfile by name (unnamed ones by index), instructions in order.
    Continuation lines are joined; comments and parser directives are dropped."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    logical = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            if match:
                current = Stage(match.group(2) or str(len(stages)), match.group(1))
                stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """``name`` and the stages it is built FROM, nearest first."""
    found: list[Stage] = []
    while name in stages and stages[name] not in found:
        found.append(stages[name])
        name = stages[name].base
    return found


def effective(stages: dict[str, Stage], name: str, keyword: str) -> str | None:
    """The arguments of the last ``keyword`` instruction that applies to the image ``name``."""
    for stage in chain(stages, name):
        for key, args in reversed(stage.instructions):
            if key == keyword:
                return args
    return None


def installs(stages: dict[str, Stage], name: str) -> str:
    """Every RUN of ``name``'s chain and of the stages it copies from (``COPY --from=``)."""
    seen: set[str] = set()
    text: list[str] = []

    def visit(stage_name: str) -> None:
        for stage in chain(stages, stage_name):
            if stage.name in seen:
                continue
            seen.add(stage.name)
            for key, args in stage.instructions:
                if key == "RUN":
                    text.append(args)
                source = re.match(r"--from=(\S+)", args) if key == "COPY" else None
                if source:
                    visit(source.group(1))

    visit(name)
    return "\n".join(text)


def check(path: Path) -> list[Problem]:
    """Targets exist, run as a non-root user, carry a HEALTHCHECK on /healthz, install what their
    device needs."""
    where = shown(path)
    try:
        stages = parse(path.read_text(encoding="utf-8"))
    except OSError as error:
        return [Problem("docker.read", where, str(error))]
    problems = check_context(path, stages)
    for target, (needed, forbidden) in TARGETS.items():
        if target not in stages:
            problems.append(Problem("docker.target-missing", where, f"no stage named {target!r}"))
            continue
        user = effective(stages, target, "USER")
        if user is None or user.split()[0] in ROOT_USERS:
            problems.append(Problem("docker.root", f"{where}: {target}",
                                    f"runs as {user or 'root (no USER)'}; use an unprivileged user"))
        health = effective(stages, target, "HEALTHCHECK")
        if health is None or health.upper().startswith("NONE") or "/healthz" not in health:
            problems.append(Problem("docker.healthcheck", f"{where}: {target}",
                                    "no HEALTHCHECK that asks /healthz"))
        run = installs(stages, target)
        if not re.search(needed, run):
            problems.append(Problem("docker.install", f"{where}: {target}", f"does not install {needed!r}"))
        if forbidden and re.search(forbidden, run):
            problems.append(Problem("docker.install", f"{where}: {target}", f"installs {forbidden!r}"))
    return problems


def copied_sources(stages: dict[str, Stage]) -> list[str]:
    """What the Dockerfile copies from the build context (not ``--from`` another stage)."""
    sources: list[str] = []
    for stage in stages.values():
        for key, args in stage.instructions:
            words = [w for w in args.split() if not w.startswith("--")]
            if key in ("COPY", "ADD") and "--from=" not in args and len(words) > 1:
                sources += [w.removeprefix("./").rstrip("/") for w in words[:-1]]
    return sources


def check_context(path: Path, stages: dict[str, Stage]) -> list[Problem]:
    """With an allow-list ``Dockerfile.dockerignore`` (``*`` then ``!path`` lines), everything the
    Dockerfile copies must be let through, or the build fails on a file it cannot see."""
    ignore = path.with_name(path.name + ".dockerignore")
    if not ignore.is_file():
        return [Problem("docker.context", shown(path), f"no {ignore.name}: the whole repository (.venv too) is sent to the builder")]
    lines = [line.strip() for line in ignore.read_text(encoding="utf-8").splitlines()]
    if "*" not in lines:
        return []
    allowed = {line[1:].removeprefix("./").rstrip("/") for line in lines if line.startswith("!")}
    return [Problem("docker.context", shown(ignore), f"COPY {source} is excluded from the build context")
            for source in copied_sources(stages) if source not in allowed]


def healthcheck_of(path: Path, target: str | None) -> str | None:
    """The HEALTHCHECK an image built from ``path`` (at ``target``, else the last stage) has."""
    try:
        stages = parse(path.read_text(encoding="utf-8"))
    except OSError:
        return None
    if not stages:
        return None
    health = effective(stages, target or list(stages)[-1], "HEALTHCHECK")
    return None if health is None or health.upper().startswith("NONE") else health
