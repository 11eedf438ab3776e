"""The deployment files as shipped pass every offline check, and render as intended."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.deploy_check import DEPLOY_DIR, check_deployment, kustomizations, render
from tests.support.deploy_check.__main__ import main
from tests.support.deploy_check.kustomize import containers
from tests.support.deploy_check.problems import Problem


def test_the_shipped_deployment_passes_every_check() -> None:
    problems = check_deployment(DEPLOY_DIR)
    assert problems == [], "\n".join(map(str, problems))


def test_the_base_and_both_overlays_are_checked() -> None:
    assert [p.name for p in kustomizations(DEPLOY_DIR)] == ["base", "dev", "production"]


@pytest.mark.parametrize(("overlay", "namespace", "planner_image"), [
    ("dev", "theodolite-dev", "theodolite-planner:dev"),
    ("production", "theodolite", "registry.example.com/theodolite/planner:0.1.0"),
])
def test_overlays_set_namespace_images_and_patches(overlay: str, namespace: str, planner_image: str) -> None:
    problems: list[Problem] = []
    manifests = render(DEPLOY_DIR / "k8s" / "overlays" / overlay, problems)
    assert problems == []
    kinds = sorted(m.kind for m in manifests)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Deployment", "Namespace",
                     "PodDisruptionBudget", "PodDisruptionBudget", "PodDisruptionBudget", "ScaledObject", "ScaledObject"]
    for manifest in manifests:
        if manifest.kind == "Namespace":
            assert manifest.name == namespace
        else:
            assert manifest.obj["metadata"]["namespace"] == namespace
    planner = next(m for m in manifests if m.kind == "Deployment" and m.name == "planner")
    assert [c["image"] for c in containers(planner.obj)] == [planner_image]
    gpu = next(m for m in manifests if m.kind == "ScaledObject" and m.name == "worker-gpu")
    assert gpu.obj["spec"]["minReplicaCount"] == 0
    assert f'namespace="{namespace}"' in gpu.obj["spec"]["triggers"][0]["metadata"]["query"]


def test_the_base_is_not_changed_by_rendering_an_overlay() -> None:
    problems: list[Problem] = []
    render(DEPLOY_DIR / "k8s" / "overlays" / "dev", problems)
    base = render(DEPLOY_DIR / "k8s" / "base", problems)
    assert problems == []
    assert all("namespace" not in m.obj["metadata"] for m in base)


def test_the_command_line_exits_0_on_the_shipped_files_and_1_on_a_broken_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DEPLOY_DIR)]) == 0
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, broken)
    planner = broken / "k8s" / "base" / "planner.yaml"
    planner.write_text(planner.read_text(encoding="utf-8").replace("replicas: 2", 'replicas: "two"'), encoding="utf-8")
    assert main([str(broken)]) == 1
    out = capsys.readouterr().out
    assert "k8s.schema" in out and "spec.replicas" in out


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_config_accepts_the_file_and_refuses_an_unknown_key(tmp_path: Path) -> None:
    """A second opinion from the real tool where it is installed (it needs no Docker engine)."""
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, deploy)
    shutil.copy(deploy / ".env.example", deploy / ".env")

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker-compose", "-f", str(deploy / "compose.yaml"), "config", "-q"],
                              capture_output=True, text=True, timeout=60, check=False)

    assert config().returncode == 0, config().stderr
    compose = deploy / "compose.yaml"
    compose.write_text(compose.read_text(encoding="utf-8").replace("    restart: unless-stopped\n",
                                                                   "    restart: unless-stopped\n    restrat: no\n", 1),
                       encoding="utf-8")
    assert config().returncode != 0
