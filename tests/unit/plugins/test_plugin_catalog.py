"""The built-in plugins as the validator sees them: read statically, unique short names."""

import subprocess
import sys
from pathlib import Path

from shared.plugin_catalog import PluginCatalog

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("random", "backend", "data", "models", "attacks", "defenses", "metrics", "artifacts")


def builtin_tasks():
    catalog = PluginCatalog(include_builtin=True)
    assert not catalog.scan_problems()
    return [task for task in catalog.all_tasks() if task.spec.module.startswith("plugins.")]


def test_every_family_has_tasks_and_short_names_are_unique():
    tasks = builtin_tasks()
    names = [task.spec.name for task in tasks]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    families = {task.spec.module.split(".")[1] for task in tasks}
    assert set(FAMILIES) <= families


def test_static_specs_match_the_imported_functions():
    import importlib

    from shared.plugin_api import spec_of

    for task in builtin_tasks():
        function = getattr(importlib.import_module(task.spec.module), task.spec.function)
        assert spec_of(function) == task.spec


def test_heavy_tasks_run_on_gpu_workers():
    devices = {task.spec.name: task.spec.device for task in builtin_tasks()}
    for name in (
        "train_classifier",
        "predict_logits",
        "fgm_attack",
        "pgd_attack",
        "adversarial_train_classifier",
    ):
        assert devices[name] == "gpu"
    assert devices["load_digits_dataset"] == "cpu"


def test_importing_plugins_does_not_import_jax():
    code = "import sys, plugins, plugins.random, plugins.models, plugins.attacks; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
