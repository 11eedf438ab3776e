"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real
cluster: a planner and a cpu worker as processes, RabbitMQ, the Mongo-wire server, and
``theodolite dashboard`` as a user starts it.

* a job's graph turns green step by step, live (a MutationObserver in the page records every
  state each step node shows, in order);
* a failing step turns red, and a click on it shows its traceback;
* a step's panel shows what it printed and a chart of the metric it logged per step;
* Cancel on the job page cancels the job; Resume starts its next run;
* the jobs page shows the workers and a loud banner for a step waiting on a device no worker
  serves;
* bound off loopback, the page says actions need the token, refuses them without it and
  does them with it;
* a 5,000-step fan-out renders in under 2 s, its repeated steps grouped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission, new_job_id
from shared.states import JobState
from tests.integration import documents
from tests.support.browser import chromium
from tests.support.dashboard import Dashboard, running_dashboard
from tests.support.distributed import TEST_PLUGINS, make_settings, running_cluster

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]
T = TypeVar("T")
TOKEN = "browser-test-token"
RECORDER = """() => {
  window.seen = {};
  const note = () => {
    for (const node of document.querySelectorAll('.node[data-step]')) {
      const step = node.dataset.step, state = node.dataset.state, list = (window.seen[step] ??= []);
      if (list[list.length - 1] !== state) list.push(state);
    }
  };
  note();
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['data-state']});
}"""


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs asyncio code beside Playwright's sync API (which keeps its own loop in this thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("dashboard-browser-logs")
    settings = make_settings(amqp_url, mongo_url, heartbeat_s=0.5, concurrency=4)
    with running_cluster(settings, {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def dashboard(cluster: LocalCluster) -> Iterator[Dashboard]:
    with running_dashboard(cluster.environment()) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    context.close()
    assert not problems, f"the page threw: {problems}"


def submit(cluster: LocalCluster, text: str) -> str:
    job_id = new_job_id()

    async def send() -> None:
        async with Client(cluster.settings) as client:
            await client.submit(JobSubmission(document=text, job_id=job_id))

    in_thread(send())
    return job_id


def cancel(cluster: LocalCluster, job_id: str) -> None:
    async def send() -> None:
        async with Client(cluster.settings) as client:
            await client.cancel(job_id, grace_s=0)

    in_thread(send())


def job_state(cluster: LocalCluster, job_id: str) -> str | None:
    async def read() -> str | None:
        async with Client(cluster.settings) as client:
            doc = await client.store.job_state(job_id)
            return None if doc is None else str(doc["state"])

    return in_thread(read())


def wait_for_state(cluster: LocalCluster, job_id: str, wanted: JobState, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (state := job_state(cluster, job_id)) != wanted.value:
        assert time.monotonic() < deadline, f"job {job_id} is {state}, not {wanted.value}, after {timeout_s:g} s"
        time.sleep(0.2)


def node(page: Page, step: str, state: str | None = None) -> str:
    return f'.node[data-step="{step}"]' + ("" if state is None else f'[data-state="{state}"]')


def test_the_graph_turns_green_step_by_step(dashboard: Dashboard, cluster: LocalCluster, page: Page,
                                            tmp_path: Path) -> None:
    job_id = submit(cluster, documents.chain_with_log(str(tmp_path), length=4, seconds=1.0))
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(node(page, "s3"), timeout=30_000)
    page.evaluate(RECORDER)
    page.wait_for_selector(node(page, "s3", "succeeded"), timeout=60_000)
    seen: dict[str, list[str]] = page.evaluate("window.seen")
    for name in ("s1", "s2", "s3"):  # s0 may have started before the page was open
        assert seen[name][-2:] == ["running", "succeeded"], seen
        assert "failed" not in seen[name], seen
    # Step by step: while s1 ran, s2 and s3 were not green yet.
    assert seen["s2"][0] != "succeeded" and seen["s3"][0] != "succeeded", seen
    assert page.locator(".node[data-state='succeeded']").count() == 4


def test_a_failing_step_turns_red_and_shows_its_traceback(dashboard: Dashboard, cluster: LocalCluster, page: Page) -> None:
    job_id = submit(cluster, documents.FAILING)
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(node(page, "boom", "failed"), timeout=60_000)
    assert page.locator(node(page, "ok")).get_attribute("data-state") == "succeeded"
    page.click(node(page, "boom"))
    traceback = page.locator("#traceback")
    traceback.wait_for(timeout=15_000)
    page.wait_for_function("() => document.querySelector('#traceback').textContent.includes('kaboom from the test')",
                           timeout=15_000)
    assert "Traceback" in traceback.inner_text() or "Error" in traceback.inner_text()
    assert "kaboom from the test" in page.locator("#step-panel").inner_text()


def test_a_steps_panel_shows_its_logs_and_a_chart_of_its_metric(dashboard: Dashboard, cluster: LocalCluster,
                                                                 page: Page) -> None:
    job_id = submit(cluster, "graph:\n  talk: {chatty: [4]}\n")
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(node(page, "talk", "succeeded"), timeout=60_000)
    page.click(node(page, "talk"))
    chart = page.locator('#step-panel svg.metric-chart[data-metric="loss"]')
    chart.wait_for(timeout=15_000)
    assert chart.locator("polyline, path").count() >= 1, "the loss is drawn as a line"
    page.wait_for_function("() => document.querySelector('#logs')?.textContent.includes('line 4 of 4')", timeout=15_000)


def test_resume_on_the_page_starts_the_next_run(dashboard: Dashboard, cluster: LocalCluster, page: Page) -> None:
    job_id = submit(cluster, documents.RESUMABLE)
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(node(page, "b", "failed"), timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#resume').disabled", timeout=15_000)
    page.get_by_role("button", name="Resume").click()
    page.get_by_text(f"resume of job {job_id} sent").wait_for(timeout=15_000)
    page.wait_for_function("() => document.querySelector('#run')?.textContent.trim() === '2'", timeout=30_000)
    wait_for_state(cluster, job_id, JobState.FAILED, timeout_s=60)  # b fails again: ok is still false
    assert page.locator(node(page, "a")).get_attribute("data-state") == "succeeded"


def test_the_jobs_page_shows_the_workers_and_a_banner_for_an_unserved_device(dashboard: Dashboard, cluster: LocalCluster,
                                                                              page: Page) -> None:
    job_id = submit(cluster, "graph:\n  g:\n    device_label: [1]\n")
    try:
        page.goto(f"{dashboard.url}/")
        banner = page.locator('#alarms .alarm[data-device="gpu"]')
        banner.wait_for(timeout=30_000)
        page.wait_for_function(f"() => document.querySelector('#alarms').textContent.includes('{job_id}')", timeout=30_000)
        assert "device gpu: no worker serves it" in banner.inner_text()
        page.locator(f'a[href="/jobs/{job_id}"]').first.wait_for(timeout=15_000)
        page.wait_for_function("() => document.querySelector('#cluster').textContent.includes('cpu')", timeout=15_000)
    finally:
        cancel(cluster, job_id)


def test_cancel_on_the_page_cancels_the_job(dashboard: Dashboard, cluster: LocalCluster, page: Page,
                                            tmp_path: Path) -> None:
    job_id = submit(cluster, documents.chain_with_log(str(tmp_path), length=2, seconds=60.0))
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(node(page, "s0", "running"), timeout=60_000)
    page.get_by_role("button", name="Cancel").click()
    wait_for_state(cluster, job_id, JobState.CANCELLED, timeout_s=60)
    page.wait_for_selector(node(page, "s0", "cancelled"), timeout=30_000)
    assert page.locator(node(page, "s1")).get_attribute("data-state") in ("cancelled", "skipped")


def test_off_loopback_actions_need_the_token(cluster: LocalCluster, browser: Browser, tmp_path: Path) -> None:
    job_id = submit(cluster, documents.chain_with_log(str(tmp_path), length=1, seconds=60.0))
    env = {**cluster.environment(), "THEODOLITE_DASHBOARD_TOKEN": TOKEN}
    with running_dashboard(env, "--host", "0.0.0.0") as exposed:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{exposed.port}/jobs/{job_id}")
            page.wait_for_selector(node(page, "s0", "running"), timeout=60_000)
            page.get_by_text("THEODOLITE_DASHBOARD_TOKEN").first.wait_for(timeout=10_000)

            page.get_by_role("button", name="Cancel").click()
            page.get_by_text("actions need the token").last.wait_for(timeout=10_000)  # the server's 403, shown
            assert page.get_by_text(f"cancel of job {job_id} sent").count() == 0

            page.locator("input[type=password]").fill(TOKEN)
            page.get_by_role("button", name="Cancel").click()
            wait_for_state(cluster, job_id, JobState.CANCELLED, timeout_s=60)
        finally:
            context.close()


def test_a_5000_step_fan_out_renders_in_under_2_s(dashboard: Dashboard, cluster: LocalCluster, page: Page) -> None:
    job_id = submit(cluster, documents.fan_out_in(5000))
    wait_for_state(cluster, job_id, JobState.SUCCEEDED, timeout_s=240)
    started = time.monotonic()
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    page.wait_for_selector(".node[data-state='succeeded']", timeout=10_000)
    took = time.monotonic() - started
    print(f"the job page of a 5,000-step fan-out drew its graph in {took:.2f} s")
    assert took < 2.0, f"the job page of a 5,000-step fan-out took {took:.2f} s to draw its graph"
    nodes = page.locator(".node")
    assert nodes.count() <= 5, "the 5,000 repeated steps are drawn as a group"
    drawn = page.locator("#graph").text_content() or ""
    assert "×5000" in drawn, f"the fan-out is one node saying how many steps it holds: {drawn!r}"
