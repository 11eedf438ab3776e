"""deploy/compose.yaml: the Compose Specification's schema, then credentials and interpolation.

The schema (deploy/schemas/compose-spec.json) is what `docker compose config` validates against,
so an unknown key or a wrong type fails here as it would there. The credential rules: every
user, password and key is a required ``${VAR:?...}`` from the env file (deploy/.env, whose
template is .env.example), none is written in the file, and RabbitMQ's guest account never
reaches beyond loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from tests.support.deploy_check import compose_services
from tests.support.deploy_check.compose_model import environment_of, mounts
from tests.support.deploy_check.problems import Problem, json_path, load_yaml, read_env_file, shown

SCHEMA = "compose-spec.json"
ENV_TEMPLATE = ".env.example"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"USER|PASS|SECRET|TOKEN|KEY", re.IGNORECASE)
LITERAL_CREDENTIALS = re.compile(r"://[^/@\s:$]+:[^/@\s$]+@")


@cache
def _validator(path: Path) -> jsonschema.Draft201909Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft201909Validator(schema)


def check(deploy_dir: Path, schemas_dir: Path) -> list[Problem]:
    path = deploy_dir / "compose.yaml"
    where = shown(path)
    problems: list[Problem] = []
    compose = load_yaml(path, problems, "compose.read")
    if problems:
        return problems
    errors = sorted(_validator((schemas_dir / SCHEMA).resolve()).iter_errors(compose),
                    key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        problems.append(Problem("compose.schema", f"{where}: {json_path(error.absolute_path)}", error.message))
    if problems:  # the rules below assume the shapes the schema promises
        return problems
    problems += _interpolation(compose, deploy_dir, where)
    problems += _credentials(compose, deploy_dir, where)
    problems += compose_services.check(compose, deploy_dir, where)
    return problems


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string value in ``node`` with its dotted path (``x-`` extension blocks included)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def variables(text: str) -> Iterator[tuple[str, str]]:
    """``(name, modifier)`` of each interpolation in ``text`` (``$$`` is a literal ``$``)."""
    for match in VARIABLE.finditer(text.replace("$$", "")):
        yield (match.group(1) or match.group(3)), (match.group(2) or "")


def _interpolation(compose: dict[str, Any], deploy_dir: Path, where: str) -> list[Problem]:
    template = deploy_dir / ENV_TEMPLATE
    if not template.is_file():
        return [Problem("compose.env-template", where, f"no {ENV_TEMPLATE} lists the variables it needs")]
    defined = read_env_file(template)
    problems: list[Problem] = []
    for path, text in strings(compose):
        for name, modifier in variables(text):
            if name not in defined:
                problems.append(Problem("compose.env-undefined", f"{where}: {path}", f"${{{name}}} is not in {ENV_TEMPLATE}"))
            if SECRET_NAME.search(name) and not modifier.startswith(":?"):
                problems.append(Problem("compose.env-optional", f"{where}: {path}",
                                        f"${{{name}}} must be required (${{{name}:?...}}): no default credential"))
    return problems


def _credentials(compose: dict[str, Any], deploy_dir: Path, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for path, text in strings(compose):
        key = path.rsplit(".", 1)[-1]
        if "guest:guest" in text or (SECRET_NAME.search(key) and "environment" in path and text.strip() == "guest"):
            problems.append(Problem("compose.guest", f"{where}: {path}", "RabbitMQ's guest account is never used"))
        elif LITERAL_CREDENTIALS.search(text) or (
                "environment" in path and SECRET_NAME.search(key) and "${" not in text):
            problems.append(Problem("compose.literal-credential", f"{where}: {path}",
                                    "a credential written in the file; take it from the env file (${VAR:?...})"))
    template = deploy_dir / ENV_TEMPLATE
    if template.is_file():
        for name, value in read_env_file(template).items():
            if SECRET_NAME.search(name) and value.lower() == "guest":
                problems.append(Problem("compose.guest", shown(template), f"{name}=guest"))
    for name, service in (compose.get("services") or {}).items():
        if str(service.get("image", "")).startswith("rabbitmq"):
            problems += _rabbitmq_guest(name, service, deploy_dir, where)
    return problems


def _rabbitmq_guest(name: str, service: dict[str, Any], deploy_dir: Path, where: str) -> list[Problem]:
    """Without RABBITMQ_DEFAULT_USER the image creates guest/guest, and its own configuration lets
    guest in from anywhere: a conf.d file must put guest back on loopback."""
    problems: list[Problem] = []
    environment = environment_of(service, deploy_dir)
    if not environment.get("RABBITMQ_DEFAULT_USER"):
        problems.append(Problem("compose.guest", f"{where}: services.{name}",
                                "RABBITMQ_DEFAULT_USER is not set, so the broker creates guest/guest"))
    confs = [deploy_dir / source for source, target in mounts(service)
             if target.startswith("/etc/rabbitmq/conf.d/")]
    if not any(re.search(r"^\s*loopback_users\.guest\s*=\s*true\s*$", c.read_text(encoding="utf-8"), re.MULTILINE)
               for c in confs if c.is_file()):
        problems.append(Problem("compose.guest", f"{where}: services.{name}",
                                "no conf.d file mounted with `loopback_users.guest = true`"))
    return problems
