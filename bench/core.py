"""Core benchmark: parse, validate and plan times for long chains, and the embedded runner's
per-step cost beside Dioptra's own sequential engine, measured in the same run.

    .venv/bin/python bench/core.py            # 1k/10k/50k/100k chains
    .venv/bin/python bench/core.py --quick    # 1k/10k only
    .venv/bin/python bench/core.py --dioptra-validate   # also time Dioptra's validator (slow)

Prints a Markdown table. Dioptra figures need dioptra-platform (installed by `make setup`).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "plugins"))

from shared.document import check_text
from shared.document.parameters import bind_parameters
from shared.document.source import parse_text
from shared.document.validation import validate_data
from shared.execution.local import LocalExecutor
from shared.gc_pause import gc_paused
from shared.planner.core import PlannerCore
from shared.plugin_catalog import PluginCatalog
from shared.plugin_registry import PluginRegistry

TASKS = {"inc": {"plugin": "bench_tasks.bench_inc", "inputs": [{"x": "integer"}], "outputs": {"value": "integer"}}}


def chain(n: int) -> dict:
    graph = {"s0": {"inc": [0]}}
    for i in range(1, n):
        graph[f"s{i}"] = {"inc": [f"$s{i - 1}"]}
    return {"tasks": TASKS, "graph": graph}


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def catalog() -> PluginCatalog:
    return PluginCatalog(search_dirs=[HERE / "plugins"], include_builtin=False)


def bench_document(n: int, repeat: int) -> dict[str, float]:
    document = chain(n)
    text = yaml.safe_dump(document, sort_keys=False)
    cat = catalog()

    def parse() -> None:
        with gc_paused():
            parse_text(text, "chain.yaml")

    def validate() -> None:
        with gc_paused():
            validate_data(document, cat)

    checked = check_text(text, "chain.yaml", cat).document
    assert checked is not None
    deps = {name: step.dependencies for name, step in checked.steps.items()}

    def plan() -> None:
        core = PlannerCore(deps)
        ready = core.start()
        while ready:
            ready = core.succeeded(ready.pop())

    return {
        "parse_s": best(parse, repeat),
        "validate_s": best(validate, repeat),
        "check_s": best(lambda: check_text(text, "chain.yaml", cat), repeat),
        "plan_s": best(plan, repeat),
    }


def bench_runner(n: int, repeat: int, concurrency: int) -> float:
    text = yaml.safe_dump(chain(n), sort_keys=False)
    document = check_text(text, "chain.yaml", catalog()).document
    values, _ = bind_parameters(document, {})
    with PluginRegistry([HERE / "plugins"]) as registry:
        LocalExecutor(document, values, registry, concurrency=concurrency).run()  # warm-up: imports

        def run() -> None:
            result = LocalExecutor(document, values, registry, concurrency=concurrency).run()
            assert result.steps[f"s{n - 1}"].outputs["value"] == n

        return best(run, repeat) / n


def bench_dioptra_engine(n: int, repeat: int) -> float | None:
    try:
        from dioptra.task_engine import task_engine
    except ImportError:
        return None
    document = chain(n)

    def run() -> None:
        context = task_engine.EngineContext(copy.deepcopy(document), {}, {}, {})
        task_engine._run_steps(context)
        assert context.step_outputs[f"s{n - 1}"]["value"] == n

    run()
    return best(run, repeat) / n


def bench_dioptra_validate(n: int) -> float | None:
    try:
        from dioptra.task_engine import validation
    except ImportError:
        return None
    document = chain(n)
    started = time.perf_counter()
    validation.validate(document)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dioptra-validate", action="store_true", help="also time Dioptra's validator (17 s at 50k)")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 50_000, 100_000]

    print("## Document: parse, validate, plan (best of 3)\n")
    print("| steps | parse YAML | validate | parse+validate (`check_text`) | plan (core, whole chain) |" + (" Dioptra validate |" if args.dioptra_validate else ""))
    print("|---:|---:|---:|---:|---:|" + ("---:|" if args.dioptra_validate else ""))
    for n in sizes:
        r = bench_document(n, 3 if n <= 50_000 else 2)
        row = f"| {n:,} | {r['parse_s'] * 1e3:,.0f} ms | {r['validate_s'] * 1e3:,.0f} ms | {r['check_s'] * 1e3:,.0f} ms | {r['plan_s'] * 1e3:,.0f} ms |"
        if args.dioptra_validate:
            dv = bench_dioptra_validate(n) if n <= 50_000 else None
            row += f" {dv:,.1f} s |" if dv is not None else " – |"
        print(row, flush=True)

    n = 10_000
    print(f"\n## Embedded runner: per-step cost on a {n:,}-step chain (best of 5)\n")
    print("| engine | µs per step | vs Dioptra |")
    print("|---|---:|---:|")
    dioptra = bench_dioptra_engine(n, 5)
    rows = [("Dioptra task engine (sequential, in-process)", dioptra)]
    for concurrency in (1, 4):
        rows.append((f"theodolite run, {concurrency} thread{'s' if concurrency > 1 else ''}", bench_runner(n, 5, concurrency)))
    for label, per_step in rows:
        if per_step is None:
            print(f"| {label} | not installed | |")
            continue
        ratio = f"{per_step / dioptra:.2f}×" if dioptra else "–"
        print(f"| {label} | {per_step * 1e6:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
