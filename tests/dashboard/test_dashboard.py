"""The dashboard in a real browser (Debian's headless chromium, driven over the DevTools
protocol) against a real `gaia serve`: what the page shows, that it follows the namespace
live, and that its buttons act. Screenshots go to each test's tmp dir.

Waits are hang guards, never timing checks; the one figure measured (first render of a
100,000-process namespace) is printed, not asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser, Page, executable

import gaia
from gaia.api.dashboard import url as dashboard_url
from server.gaia_server import TRIANGLE, Server, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# GAIA_DOCS_SCREENSHOT=docs/img/dashboard.png also writes the triangle's picture there.
DOCS_SCREENSHOT = os.environ.get("GAIA_DOCS_SCREENSHOT")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if executable() is None:
        pytest.fail("no chromium on PATH; `make browser` installs Debian's (as root)")
    with Browser(tmp_path_factory.mktemp("chromium")) as running:
        yield running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path / "data", workers=2).start()
    yield started
    started.stop()


def _triangle(flow: gaia.Gaia) -> None:
    flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
    flow.merge("triangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))


def _seed(server: Server) -> None:
    for source in (TRIANGLE / "data").rglob("*"):
        if source.is_file():
            target = server.data / "triangle" / source.relative_to(TRIANGLE / "data")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


def _state(node_id: str) -> str:
    return (
        f"document.querySelector({json.dumps(f'[data-id={json.dumps(node_id)}]')})?.dataset.state"
    )


def _namespace_state(page: Page) -> str:
    return str(page.evaluate("document.querySelector('#ns-state')?.dataset.state"))


def _nodes(page: Page) -> dict[str, str]:
    found = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.node')]"
        ".map(n => [n.dataset.id, n.dataset.state]))"
    )
    return dict(found or {})


def _watch_states(page: Page, node_id: str) -> None:
    """Record every state the node shows, in order, in window.seen (no reload allowed)."""
    page.evaluate(
        f"""(() => {{
            window.seen = [];
            const note = () => {{
                const s = {_state(node_id)};
                if (s && window.seen[window.seen.length - 1] !== s) window.seen.push(s);
            }};
            note();
            new MutationObserver(note).observe(document.body,
                {{subtree: true, attributes: true, childList: true}});
        }})()"""
    )


def test_the_triangle_computes_live_on_the_page(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    flow = server.client()
    _triangle(flow)  # its sources are not there yet: hello-* runs, md5-* waits
    wait_for(flow, "triangle", ("incomplete",))
    with browser.open(dashboard_url(server.address, server.token, "/ns/triangle")) as page:
        page.wait_for("document.querySelector('#ns-state')?.dataset.state === 'incomplete'")
        nodes = _nodes(page)
        assert nodes["p:md5-rabbit"] == "waiting"
        assert nodes["d:animals/rabbit"] == "missing"
        assert nodes["pg:hello"] == "complete"  # the fan-out, as one node
        assert {"pg:cat", "pg:wc", "p:both:cat-ab", "p:both:wc-ab"} <= nodes.keys()
        assert page.evaluate("document.querySelector('[data-id=\"pg:cat\"]').dataset.size") == "2"
        page.screenshot(tmp_path / "triangle-waiting.png")

        _watch_states(page, "p:md5-rabbit")
        _seed(server)
        page.click("[data-action='trigger']")  # finds the sources, runs the rest
        page.wait_for("document.querySelector('#ns-state').dataset.state === 'complete'")
        page.wait_for(f"{_state('p:both:wc-ab')} === 'complete'")
        assert page.evaluate("window.seen")[0] == "waiting"
        assert page.evaluate("window.seen")[-1] == "complete"  # changed in place: no reload
        page.wait_for(
            "[...document.querySelectorAll('.node')].every(n => n.dataset.state === 'complete')",
            what="every node to show complete",
        )
        page.screenshot(tmp_path / "triangle-complete.png")

        # a process in detail: its command line, its inputs and outputs, its log
        page.click("[data-id='p:md5-rabbit']")
        page.wait_for("document.querySelector('.process-detail')?.dataset.process === 'md5-rabbit'")
        assert page.text(".command-line") == "md5sum /in/in"
        detail = page.text(".process-detail")
        assert "animals/rabbit" in detail and "md5/rabbit" in detail and "md5-rabbit#1" in detail
        checksum = (server.data / "triangle" / "md5" / "rabbit").read_text().split()[0]
        page.wait_for(f"document.querySelector('#log-tail').textContent.includes('{checksum}')")
        shot = page.screenshot(tmp_path / "triangle-detail.png")
        if DOCS_SCREENSHOT:
            shutil.copy(shot, ROOT / DOCS_SCREENSHOT)

        # expire from the page: md5-rabbit and what depends on it run again
        page.click("[data-action='expire']")
        page.click("[data-action='confirm-expire']")
        page.wait_for("document.querySelector('#notice')?.textContent.includes('expired')")
        assert "expired 5 processes" in page.text("#notice")  # md5, cat, wc, both (2)
        page.wait_for(
            "document.querySelector('.process-detail').textContent.includes('md5-rabbit#2')"
        )
        status = wait_for(flow, "triangle")
        assert {
            p: status["tasks"][p]["run"] for p in ("md5-rabbit", "cat-rabbit", "md5-snake")
        } == {
            "md5-rabbit": 2,
            "cat-rabbit": 2,
            "md5-snake": 1,
        }
        page.wait_for("document.querySelector('#ns-state').dataset.state === 'complete'")


def test_the_graph_is_fitted_before_it_is_first_shown(server: Server, browser: Browser) -> None:
    """A node painted where the graph was laid out, then moved to where it fits the
    window, is a click that lands on nothing: every frame shows it in one place."""
    _triangle(server.client())
    record_boxes = """
        window.boxes = [];
        (function watch() {
            const node = document.querySelector("[data-id='p:md5-rabbit']");
            if (node) {
                const r = node.getBoundingClientRect();
                const box = [r.x, r.y, r.width, r.height].map(Math.round).join(",");
                if (window.boxes.at(-1) !== box) window.boxes.push(box);
            }
            requestAnimationFrame(watch);
        })();
    """
    with browser.open(
        dashboard_url(server.address, server.token, "/ns/triangle"), record_boxes
    ) as page:
        page.wait_for("window.boxes?.length > 0")
        page.evaluate("new Promise((done) => setTimeout(done, 1000))")
        assert len(page.evaluate("window.boxes")) == 1, page.evaluate("window.boxes")


def test_a_group_expands_into_its_members(server: Server, browser: Browser, tmp_path: Path) -> None:
    flow = server.client()
    _seed(server)
    _triangle(flow)
    wait_for(flow, "triangle")
    with browser.open(dashboard_url(server.address, server.token, "/ns/triangle")) as page:
        page.wait_for("document.body?.dataset.firstRender")  # laid out and fitted: clickable
        page.click("[data-id='pg:cat']")
        page.wait_for("document.querySelectorAll('.group-detail .members li').length === 2")
        assert "cat-rabbit" in page.text(".group-detail .members")
        page.click("[data-action='expand']")
        page.wait_for("document.querySelector('[data-id=\"p:cat-snake\"]') !== null")
        nodes = _nodes(page)
        assert nodes["p:cat-rabbit"] == nodes["d:cat/snake"] == "complete"
        assert "pg:cat" not in nodes
        page.screenshot(tmp_path / "triangle-expanded.png")
        page.click("[data-action='collapse']")
        page.wait_for("document.querySelector('[data-id=\"pg:cat\"]') !== null")


def test_a_running_task_shows_its_log_live_and_halt_and_trigger_act(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    flow = server.client()
    flow.command(
        [
            {
                "key": "tick",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "for i in $(seq 1 {{N}}); do echo tick $i; sleep 0.25; done",
                ],
                "stdout": "/out/out",
                "outputs": {"OUT": "/out/out"},
                "vars": {"N": "3"},
            }
        ]
    )
    flow.merge(
        "ticks",
        [{"key": "ticker", "command": "tick", "vars": {"N": "400"}, "outputs": {"OUT": "ticks"}}],
    )
    with browser.open(dashboard_url(server.address, server.token, "/ns/ticks")) as page:
        page.wait_for(f"{_state('p:ticker')} === 'running'")
        page.click("[data-id='p:ticker']")
        page.wait_for("document.querySelector('#log-tail')?.textContent.includes('tick 2')")
        lines = lambda: len(page.text("#log-tail").split("tick ")) - 1  # noqa: E731
        seen = lines()
        page.wait_for(
            f"document.querySelector('#log-tail').textContent.split('tick ').length - 1 > {seen + 3}"
        )
        page.screenshot(tmp_path / "ticks-live.png")

        page.click("[data-action='halt']")
        page.wait_for("document.querySelector('#ns-state')?.dataset.state === 'halted'")
        page.wait_for(f"{_state('p:ticker')} === 'waiting'")
        assert flow.status("ticks")["status"]["tasks"]["ticker"]["state"] == "cancelled"
        page.click("[data-action='trigger']")
        page.wait_for(f"{_state('p:ticker')} === 'running'")
        page.wait_for("document.querySelector('.process-detail').textContent.includes('ticker#2')")
        flow.halt("ticks")


def test_a_namespace_of_100000_processes_opens_grouped(
    server: Server, browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rules fanned out over 50,000 values; the first reads a source that is not
    there, so nothing runs. Prints the time to first render (not asserted)."""
    flow = gaia.Gaia({"gaia_host": server.address, "timeout": 300})
    flow.command([
        {"key": "copy", "image": "busybox", "command": ["cp", "/in/in", "/out/out"],
         "inputs": {"IN": "/in/in"}, "outputs": {"OUT": "/out/out"}},
    ])  # fmt: skip
    values = [str(v) for v in range(50_000)]
    started = time.monotonic()
    flow.merge(
        "big",
        [
            {"key": "gen", "command": "copy", "vars": {"V": values},
             "inputs": {"IN": "seed"}, "outputs": {"OUT": "gen/{{V}}"}},
            {"key": "use", "command": "copy", "vars": {"V": values},
             "inputs": {"IN": "gen/{{V}}"}, "outputs": {"OUT": "use/{{V}}"}},
        ],
    )  # fmt: skip
    merged = time.monotonic() - started
    opened = time.monotonic()
    with browser.open(dashboard_url(server.address, server.token, "/ns/big")) as page:
        page.wait_for("document.body?.dataset.firstRender", timeout=120)
        seen = time.monotonic() - opened
        first_render = int(page.evaluate("document.body.dataset.firstRender"))
        nodes = _nodes(page)
        assert nodes == {
            "d:seed": "missing",
            "pg:gen": "waiting",
            "dg:gen>OUT": "missing",
            "pg:use": "waiting",
            "dg:use>OUT": "missing",
        }
        assert "100,000" in page.text(".counts")
        page.screenshot(tmp_path / "big.png")

        page.click("[data-id='pg:gen']")
        page.wait_for("document.querySelectorAll('.group-detail .members li').length === 100")
        asked = time.monotonic()
        page.click("[data-action='expand']")
        page.wait_for("document.querySelector('[data-id=\"p:gen-99\"]') !== null", timeout=120)
        expanded = time.monotonic() - asked
        assert page.evaluate("document.querySelectorAll('.node').length") < 250
        page.click("[data-id='p:gen-7']")
        page.wait_for("document.querySelector('.process-detail')?.dataset.process === 'gen-7'")
        assert "gen/7" in page.text(".process-detail")
        page.screenshot(tmp_path / "big-expanded.png")
    with capsys.disabled():  # shown in every run, not only on failure
        print(
            f"\n100,000 processes: merged in {merged:.1f} s; first render {first_render} ms "
            f"after navigation ({seen:.2f} s seen from the test); one group of 50,000 "
            f"expanded in {expanded:.2f} s"
        )


def test_the_committed_page_is_built_from_the_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "dashboard" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
