"""Takes docs/dashboard-job.png: the dashboard's page of a running FGM job (examples/fgm.yaml).

Starts a throwaway cluster (its own nx-27017, a planner, a cpu and a gpu worker, on the local
RabbitMQ), the dashboard, submits the FGM example, waits until training has finished and a
later step (the attack) runs, opens the job page in Debian's chromium, shows the training step (its loss
chart) and saves the screenshot. Run from the repository root:

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard-job.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission, new_job_id
from shared.settings import Settings
from tests.support.browser import chromium
from tests.support.dashboard import running_dashboard

if TYPE_CHECKING:
    from playwright.sync_api import Page

SLOW_ATTACK = {"minimal": True, "eps": 1.0, "eps_step": 0.0002}
"""ART's minimal search in 5,000 small steps: the attack runs for seconds, long enough to be seen running."""


async def submit(settings: Settings, text: str, job_id: str) -> None:
    async with Client(settings) as client:
        await client.submit(JobSubmission(document=text, document_name="fgm.yaml", job_id=job_id, parameters=SLOW_ATTACK,
                                          labels={"example": "fgm", "by": "screenshot"}))


def job_page_data(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        data: dict[str, Any] = json.load(answer)
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-job.png")
    out = parser.parse_args().out
    tag = uuid.uuid4().hex[:8]
    settings = Settings(namespace=f"screenshot-{tag}", db=f"screenshot_{tag}")
    with tempfile.TemporaryDirectory() as logs, LocalCluster(settings, {"cpu": 1, "gpu": 1}, start_mongo=True,
                                                            log_dir=logs) as cluster:
        cluster.wait_ready(120)
        job_id = new_job_id()
        asyncio.run(submit(cluster.settings, (ROOT / "examples" / "fgm.yaml").read_text(), job_id))
        with running_dashboard(cluster.environment()) as dashboard, chromium() as browser:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.goto(f"{dashboard.url}/jobs/{job_id}")
            deadline = time.monotonic() + 300
            while True:  # the dashboard's own view: it hears step.running, MongoDB does not say it at once
                states = {name: step["state"] for name, step in
                          job_page_data(f"{dashboard.url}/api/jobs/{job_id}")["job"]["steps"].items()}
                if states.get("trained") == "succeeded" and states.get("adversarial") == "running":
                    break
                if time.monotonic() > deadline or any(s == "failed" for s in states.values()):
                    raise SystemExit(f"the FGM job did not reach its attack in time: {states}")
                page.wait_for_timeout(100)
            shoot(page, out)
            print(f"wrote {out} (job {job_id}, steps: {states})")


def shoot(page: Page, out: Path) -> None:
    """The job page, the training step's panel open (its loss chart), saved to ``out``."""
    page.wait_for_selector('.node[data-step="adversarial"][data-state="running"]', timeout=15_000)
    page.click('.node[data-step="trained"]')
    page.wait_for_selector(".metric-chart", timeout=15_000)
    page.get_by_role("button", name="fit").click()
    page.locator(".metric-chart").first.scroll_into_view_if_needed()
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=False)

if __name__ == "__main__":
    main()
