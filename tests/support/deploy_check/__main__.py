"""``python -m tests.support.deploy_check [DEPLOY_DIR]``: one line per problem, exit 1 if any."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.support.deploy_check import DEPLOY_DIR, check_deployment, kustomizations


def main(argv: list[str]) -> int:
    deploy_dir = Path(argv[0]) if argv else DEPLOY_DIR
    started = time.monotonic()
    problems = check_deployment(deploy_dir)
    for problem in problems:
        print(problem)
    rendered = ", ".join(p.name for p in kustomizations(deploy_dir))
    verdict = f"{len(problems)} problem(s)" if problems else "ok"
    print(f"deploy check: {verdict} (Dockerfile, compose.yaml, prometheus, README.md, k8s: {rendered}) "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
