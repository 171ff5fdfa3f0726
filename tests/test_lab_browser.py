"""The lab in a real browser: JupyterLab, the agent's WebRTC page and the book in Chromium.

Debian's Chromium (package ``chromium``) is driven by Playwright (``playwright`` Python
package, in the ``dev`` extra; its driver ships in the wheel, and no browser is
downloaded: ``executable_path`` points at ``/usr/bin/chromium``).

- **JupyterLab**: a server on a free loopback port, with a random token, on a *copy* of
  ``notebooks/`` (the lab would otherwise save outputs into the repository's chapters),
  ``VOICELAB_QUICK=1`` and this checkout first on the kernel's ``PYTHONPATH``, and
  without ``VOICELAB_NO_WIDGETS`` (``make test`` sets it for nbmake; a person's lab must
  not). Chromium opens chapter 1, runs all cells from the *Run* menu, waits until every
  code cell has run, checks that the ``listen`` widget is drawn once, picks another value
  in its first dropdown and waits for the widget's output to change.
- **The agent's WebRTC page**: ``serve_webrtc`` (as ``voicelab agent serve --webrtc``)
  in a thread; the page loads and has its *Call* button.
- **The rendered book**: opened by ``tests/test_book.py`` in the same way (with
  :func:`check_book`) right after it builds the book, so CI always checks it.

Screenshots go to ``test-artifacts/lab-browser/`` (or ``$VOICELAB_TEST_ARTIFACTS``);
their paths are printed. Skipped locally without Chromium or JupyterLab, failing in CI.
About 35-80 s (the machine's load decides), most of it chapter 1 running in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO, need, need_tool

pytestmark = pytest.mark.slow

CHAPTER = "01-codecs.ipynb"
#: Flags for Chromium in this sandbox (Playwright adds a fresh --user-data-dir).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Bounds, in seconds (the test polls; it never sleeps a fixed time).
SERVER_START_S = 60
CHAPTER_RUN_S = 150
WIDGET_RERUN_S = 60
#: JupyterLab settings for the test's private settings folder: no news pop-up over the
#: notebook, no autosave, and every cell in the DOM (no windowing) so it can be found.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _artifacts() -> Path:
    d = Path(os.environ.get("VOICELAB_TEST_ARTIFACTS", REPO / "test-artifacts")) / "lab-browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _shot(page, name: str) -> Path:
    path = _artifacts() / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright; closed (with every page) after the module."""
    chromium = need_tool("chromium", "chromium")
    need(importlib.util.find_spec("playwright") is not None,
         "playwright not installed (pip install -e '.[dev]'; the browser is Debian's chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


# --------------------------------------------------------------------------- JupyterLab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (this test's private folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def jupyter_lab(root: Path) -> Iterator[str]:
    """JupyterLab on a free loopback port serving a copy of ``notebooks/``.

    Yields the base URL with ``?token=`` left to the caller (``url, token``). On exit the
    server is asked to shut down (which stops its kernels), then its process group is
    terminated if it is still there; no kernel outlives the block (checked).
    """
    need(importlib.util.find_spec("jupyterlab") is not None,
         "jupyterlab not installed (pip install -e '.[lab]' or '.[dev]')")
    need(importlib.util.find_spec("jupyterlab_widgets") is not None,
         "jupyterlab_widgets not installed (it comes with ipywidgets>=8)")
    nbdir = root / "notebooks"
    shutil.copytree(REPO / "notebooks", nbdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = root / "lab-settings"
    for rel, value in LAB_SETTINGS.items():
        f = settings / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, VOICELAB_QUICK="1", VOICELAB_FIGURES=str(root / "figures"),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
               IPYTHONDIR=str(root / "ipython"))
    env.pop("VOICELAB_NO_WIDGETS", None)  # a live lab shows widgets
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           f"--ServerApp.token={token}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={nbdir}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
           "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.expose_app_in_browser=True"]
    log = root / "jupyterlab.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s: {log.read_text()[-2000:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)  # poll interval (returns at once if the server exits)
        yield base, token
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        left = _pids_mentioning(str(root))  # kernels run in their own sessions
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind by jupyter lab: {left}"


#: JavaScript: the state of the open notebook from the app JupyterLab exposes
#: (``--LabApp.expose_app_in_browser``): kernel status, code cells, how many have run,
#: and the first error output.
NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let code = 0, ran = 0, error = null;
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    code++;
    if (c.executionCount) ran++;
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j);
      if (o.type === 'error' && error === null) error = `cell ${i}: ${JSON.stringify(o.toJSON()).slice(0, 400)}`;
    }
  }
  return {kernel: kernel ? kernel.status : null, code, ran, error};
}"""


def _wait_notebook(page, predicate: str, timeout_s: float) -> dict:
    """Poll :data:`NOTEBOOK_STATE` until ``predicate`` (JS over ``s``) holds or an error output appears."""
    page.wait_for_function(
        f"() => {{ const s = ({NOTEBOOK_STATE})(); return s && (s.error !== null || ({predicate})) ? s : null; }}",
        timeout=timeout_s * 1000, polling=250)
    return page.evaluate(NOTEBOOK_STATE)


def test_chapter1_widget_works_in_a_live_jupyterlab(browser, tmp_path):
    t0 = time.monotonic()
    with jupyter_lab(tmp_path) as (base, token):
        t_server = time.monotonic() - t0
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}")
            state = _wait_notebook(page, "s.kernel === 'idle' && s.code > 0", SERVER_START_S)
            assert state["error"] is None and state["ran"] == 0, state
            _shot(page, "lab-1-chapter1-opened")

            # Run > Run All Cells, as a reader would
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            state = _wait_notebook(page, "s.kernel === 'idle' && s.ran === s.code", CHAPTER_RUN_S)
            assert state["error"] is None, state["error"]
            assert state["ran"] == state["code"] > 0, state
            t_ran = time.monotonic() - t0

            # the listen widget: rendered by the widget manager, and exactly once
            boxes = page.locator(".jp-CodeCell .widget-interact")
            assert boxes.count() == 1, f"{boxes.count()} copies of the interact widget"
            box = boxes.first
            box.scroll_into_view_if_needed()
            output = box.locator(".widget-output")
            output.locator(".jp-OutputArea-output").first.wait_for(timeout=WIDGET_RERUN_S * 1000)
            before = output.inner_text()
            assert before.strip() and not before.startswith("error:"), before
            assert box.locator("audio").count() >= 2, "the reference and decoded audio players"
            _shot(page, "lab-2-chapter1-ran")

            select = box.locator(".widget-dropdown select").first
            current = select.input_value()
            values = [o.get_attribute("value") for o in select.locator("option").all()]
            other = next(v for v in values if v != current)
            select.select_option(other)
            page.wait_for_function("([el, old]) => el.innerText !== old && el.querySelector('audio') !== null",
                                   arg=[output.element_handle(), before], timeout=WIDGET_RERUN_S * 1000,
                                   polling=250)
            after = output.inner_text()
            box.scroll_into_view_if_needed()
            _shot(page, "lab-3-widget-changed")
            assert other in after.splitlines()[0] and after != before, (current, other, after)
            assert not after.startswith("error:"), after
            assert not errors, errors
        finally:
            page.close()
    print(f"\nlab: server up {t_server:.1f} s, chapter 1 ran at {t_ran:.1f} s; widget {current!r} -> {other!r}:"
          f"\n  before: {before.splitlines()[0]}\n  after:  {after.splitlines()[0]}")


# --------------------------------------------------------------------------- WebRTC page


@contextlib.contextmanager
def agent_webrtc_front() -> Iterator[str]:
    """The agent's WebRTC front (as ``voicelab agent serve --webrtc``) in a thread; yields its URL."""
    from voicelab.agent import Agent
    from voicelab.webrtc.agent import serve_webrtc

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="webrtc-front", daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start():
        agent = await stack.enter_async_context(Agent(codecs=["opus", "pcmu"], mode="echo"))
        front = await serve_webrtc(agent)
        stack.push_async_callback(front.close)
        return front.url

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_agent_webrtc_page_loads_in_chromium(browser):
    with agent_webrtc_front() as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            response = page.goto(url + "/")
            assert response is not None and response.ok, response
            call = page.locator("button#call")
            call.wait_for(timeout=10_000)
            assert call.is_enabled() and call.inner_text().strip() == "Call"
            assert page.evaluate("typeof window.voicelab") == "object"  # the page's script ran
            _shot(page, "webrtc-agent-page")
            assert not errors, errors
        finally:
            page.close()


# --------------------------------------------------------------------------- the book


def book_index() -> Path:
    """The built book's ``index.html``: ``$VOICELAB_BOOK_INDEX``, else ``build/book/index.html``."""
    return Path(os.environ.get("VOICELAB_BOOK_INDEX", REPO / "build" / "book" / "index.html"))


def check_book(page, index: Path) -> dict:
    """Open the book's index, then its chapter 1 page (if it links one); screenshot both.

    Returns what was seen: the title, the number of links, and for chapter 1 how many
    images and plotly figures it shows.
    """
    page.goto(index.resolve().as_uri())
    title = page.title()
    links = page.locator("a[href$='.html']")
    seen = {"title": title, "links": links.count()}
    _shot(page, "book-index")
    chapter = page.locator("a[href*='01-codecs']")
    if chapter.count():
        chapter.first.click()
        page.wait_for_load_state("load")
        seen["chapter"] = page.title()
        seen["chapter_images"] = page.locator("img").count()
        seen["chapter_plotly"] = page.locator(".plotly-graph-div, .js-plotly-plot").count()
        page.set_viewport_size({"width": 1400, "height": 2400})
        _shot(page, "book-chapter1")
    return seen
