"""Job documents used by the distributed tests."""

from __future__ import annotations

DIAMOND = """
parameters:
  x: 3
graph:
  top:
    plus: [$x, 1]
  left:
    plus: [$top, 10]
  right:
    plus:
      x: $top
      k: 100
  bottom:
    total: [[$left, $right]]
"""


def fan_out_in(width: int = 200) -> str:
    lines = ["parameters:", "  base: 1", "graph:", "  source:", "    plus: [$base, 0]"]
    for i in range(width):
        lines += [f"  f{i}:", f"    plus: [$source, {i}]"]
    lines += ["  gather:", "    total:", "      - [" + ", ".join(f"$f{i}" for i in range(width)) + "]"]
    return "\n".join(lines) + "\n"


ARRAYS = """
graph:
  arr:
    make_array: [40, float32]
  small:
    make_array: [3, int64]
  tree:
    make_pytree: [6]
  described:
    describe_tree:
      tree: $tree
      array: $arr
  again:
    describe_tree:
      tree: [$small, {nested: $tree}]
      array: $small
"""


def gpu_mix(count: int = 8) -> str:
    lines = ["graph:"]
    for i in range(count):
        lines += [f"  g{i}:", f"    device_label: [{i}]", f"  c{i}:", f"    plus: [{i}, 1]"]
    return "\n".join(lines) + "\n"


FAILING = """
graph:
  ok:
    plus: [1, 1]
  boom:
    fail_with: ["kaboom from the test"]
    dependencies: [ok]
  after:
    plus: [$ok, 1]
    dependencies: [boom]
  last:
    plus: [$after, 1]
"""

INVALID = """
graph:
  a:
    plus: [1, 1]
  b:
    plus: [$nope, 1]
"""

TPU = """
graph:
  first:
    plus: [1, 1]
  accel:
    tpu_label: []
    dependencies: [first]
"""


def chain_with_log(log_dir: str, length: int = 10, seconds: float = 0.4) -> str:
    lines = ["graph:", "  s0:", "    logged_sleep:", f"      seconds: {seconds}", f"      log_dir: {log_dir}", "      name: s0"]
    for i in range(1, length):
        lines += [f"  s{i}:", "    logged_sleep:", f"      seconds: {seconds}", f"      log_dir: {log_dir}",
                  f"      name: s{i}", f"      x: $s{i - 1}"]
    return "\n".join(lines) + "\n"


def fail_beside_long(log_dir: str, seconds: float = 8.0) -> str:
    """``boom`` fails at once while the independent ``long`` sleeps ``seconds`` (traced in
    ``LOG_DIR/trace.log``); ``after_boom`` depends on ``boom``, ``after_long`` on ``long``."""
    return f"""
graph:
  boom:
    fail_with: ["boom fails fast"]
  long:
    traced_sleep:
      seconds: {seconds}
      log_dir: {log_dir}
      name: long
  after_boom:
    plus: [1, 1]
    dependencies: [boom]
  after_long:
    plus: [$long, 1]
"""


def fan_out_with_trace(log_dir: str, width: int = 12, seconds: float = 1.0) -> str:
    """``width`` independent steps ``f0``..``fN`` that each sleep, traced in ``LOG_DIR/trace.log``."""
    lines = ["graph:"]
    for i in range(width):
        lines += [f"  f{i}:", "    traced_sleep:", f"      seconds: {seconds}", f"      log_dir: {log_dir}", f"      name: f{i}"]
    return "\n".join(lines) + "\n"


def slow_to_validate(length: int = 150_000) -> str:
    """A valid chain long enough that validating it takes seconds (about 9 s for 150,000
    steps on a 2-core machine); its head fails, so an accepted copy stops at once."""
    lines = ["graph:", "  c0:", '    fail_with: ["the big chain stops here"]']
    for i in range(1, length):
        lines += [f"  c{i}:", f"    plus: [{i}, 1]", f"    dependencies: [c{i - 1}]"]
    return "\n".join(lines) + "\n"


RESUMABLE = """
parameters:
  ok: false
graph:
  a: {plus: [1]}
  b: {fail_unless: [$ok, $a]}
  c: {plus: [$b]}
"""
"""Fails at ``b`` until resumed with ``-p ok=true``."""
