"""Offline checks of everything under deploy/: the Dockerfile, the Compose file, Prometheus'
configuration and alerts, and the Kubernetes manifests (the Kustomize base and every overlay,
rendered in Python) against their schemas and the rules of a theodolite install.

No Docker engine, cluster or network: schemas ship in deploy/schemas and in the
``kubernetes-validate`` package. ``python -m tests.support.deploy_check [DEPLOY_DIR]`` prints one
line per problem and exits 1 if there is any; ``tests/unit/deploy`` runs it under ``make test``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.support.deploy_check import compose, dockerfile, guide, kube_rules, kube_schema, prometheus
from tests.support.deploy_check.kustomize import Manifest, render
from tests.support.deploy_check.problems import Problem, shown

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"

__all__ = ["DEPLOY_DIR", "Manifest", "Problem", "check_deployment", "check_kubernetes", "kustomizations", "render"]


def kustomizations(deploy_dir: Path) -> list[Path]:
    """The base and every overlay: each must render and pass on its own."""
    k8s = deploy_dir / "k8s"
    return [k8s / "base", *sorted(p for p in (k8s / "overlays").glob("*") if (p / "kustomization.yaml").is_file())]


def check_kubernetes(directory: Path, schemas_dir: Path) -> list[Problem]:
    """Render one kustomization, then check every object's schema and the install's rules.
    Each problem's ``where`` starts with the kustomization: ``[deploy/k8s/overlays/dev] ...``."""
    problems: list[Problem] = []
    manifests = render(directory, problems)
    if not problems:
        problems += kube_schema.check(manifests, schemas_dir)
    if not problems:  # the rules read fields the schemas vouch for
        problems += kube_rules.check(manifests)
    return [replace(p, where=f"[{shown(directory)}] {p.where}") for p in problems]


def check_deployment(deploy_dir: Path = DEPLOY_DIR) -> list[Problem]:
    """Every problem of the deployment files under ``deploy_dir``."""
    schemas = deploy_dir / "schemas"
    problems = [
        *dockerfile.check(deploy_dir / "Dockerfile"),
        *compose.check(deploy_dir, schemas),
        *prometheus.check(deploy_dir),
        *guide.check(deploy_dir),
    ]
    for directory in kustomizations(deploy_dir):
        problems += check_kubernetes(directory, schemas)
    return problems
