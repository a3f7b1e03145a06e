"""The demo page and browser client in real headless Chromium (Debian's package).

Playwright's Python package drives /usr/bin/chromium through ``executable_path``; no browser
is downloaded. The server is ``streamcore serve`` in a subprocess (for restarts), or an
engine served in-process on a background event loop (for cutting the page's socket from the
server side and reaching into the engine).

Screenshots for the docs: ``STREAMCORE_SCREENSHOTS=1 .venv/bin/python -m pytest
tests/test_browser.py -k screenshots`` writes docs/demo-desktop.png and docs/demo-phone.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
                       reason="Debian's chromium is not installed (scripts/test.sh installs it)"),
]
WAIT = 15_000  # ms: the bound of every wait on the page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamcore serve`` in a subprocess (demo provider)."""

    def __init__(self, port: int, *args: str, config: str | None = None) -> None:
        extra = ["--config", config] if config else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamcore.cli", "serve", "--port", str(port), "--log-format", "json",
             *extra, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "STREAMCORE_PROVIDER": "demo"},
        )
        line = self.proc.stdout.readline()  # the ready line: no sleeping
        if "listening" not in line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"streamcore serve did not start: {line!r} {err}")
        self.port = port

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


class InProcess:
    """An engine served on 127.0.0.1 by the ASGI adapter, on an event loop in a thread."""

    def __init__(self, **provider_options: object) -> None:
        from anyio.from_thread import start_blocking_portal

        from tests.helpers import make_engine, running

        self.engine = make_engine(provider={"name": "demo", "options": provider_options})
        self._running = running
        self._stack = contextlib.ExitStack()
        self.portal = self._stack.enter_context(start_blocking_portal())
        try:
            self._task, url = self.portal.start_task(self._serve)
        except BaseException:
            self._stack.close()
            raise
        self.port = int(url.split(":")[2].split("/")[0])

    async def _serve(self, *, task_status) -> None:
        import anyio

        self._stop = anyio.Event()
        async with self._running(self.engine, "asgi") as url:  # entered and left in one task
            task_status.started(url)
            await self._stop.wait()

    async def _cut(self) -> int:
        sessions = list(self.engine.sessions)
        for s in sessions:
            await s.close(1012, "test cut")
        return len(sessions)

    def cut(self) -> int:
        """Close every connection from the server side (the server keeps running)."""
        return self.portal.call(self._cut)

    async def _forget_objectives(self) -> None:
        from streamcore.objectives import InMemoryObjectiveStore

        self.engine.objectives = InMemoryObjectiveStore()

    def forget_objectives(self) -> None:
        self.portal.call(self._forget_objectives)

    def stop(self) -> None:
        try:
            self.portal.call(self._stop.set)
            self._task.result(timeout=30)
        finally:
            self._stack.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def server():
    srv = Server(free_port())
    yield srv
    srv.stop()


@pytest.fixture
def inproc():
    srv = InProcess(delay_ms=40, words=80)
    yield srv
    srv.stop()


@contextlib.contextmanager
def open_page(browser, port: int, *, width: int = 1200, height: int = 820, query: str = "delay=200"):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{port}/?{query}")
    page.wait_for_selector("#state.connected", timeout=WAIT)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors  # no uncaught exception, no unhandled promise rejection


@pytest.fixture
def page(browser, server):
    with open_page(browser, server.port) as page:
        yield page


def last_ai(page):
    return page.locator(".msg.ai").last


def ai_text(page) -> str:
    """The answer as streamed into the last bubble (without reasoning or status notes)."""
    return last_ai(page).locator(".text").inner_text()


def ask(page, text: str) -> None:
    page.fill("#input", text)
    page.click("#send")


# --- the chat ---------------------------------------------------------------------------


def test_type_a_message_and_see_the_streamed_reply(page):
    ask(page, "How do I learn the piano?")
    page.wait_for_selector(".msg.ai.streaming", timeout=WAIT)  # visible while it streams
    page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
    text = ai_text(page)
    assert "You asked: \u201cHow do I learn the piano?\u201d" in text
    assert len(text.split()) >= 50
    assert text == last_ai(page).get_attribute("data-end-content")
    assert page.locator(".msg.user").last.inner_text() == "How do I learn the piano?"


def test_stop_a_stream(page):
    ask(page, "A long story please")
    expect(last_ai(page)).to_have_text(re.compile(r"\S+ \S+ \S+"), timeout=WAIT)  # streaming
    page.click("#stop")
    page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
    text = last_ai(page).inner_text()
    assert "[user_cancelled]" in text
    assert len(text.split()) < 60


def test_model_text_is_rendered_as_text_not_html(page):
    payload = "<img src=x onerror=alert(1)>"
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ask(page, payload)
    page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
    # The demo model quotes the question: the reply contains the markup as characters.
    assert payload in ai_text(page)
    assert payload == page.locator(".msg.user").last.inner_text()
    assert page.locator(".msg img").count() == 0
    assert dialogs == []


def test_reply_finishes_once_when_the_server_cuts_the_socket_mid_reply(browser, inproc):
    """The server closes the page's socket mid-reply and keeps running: the page reconnects,
    resumes, and shows the reply once, every word once, in order."""
    question = "Tell me how resuming works"
    with open_page(browser, inproc.port, query="delay=100") as reference:
        ask(reference, question)  # the same question on a fresh connection: the same text
        reference.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
        expected = ai_text(reference)
    with open_page(browser, inproc.port, query="delay=100") as page:
        ask(page, question)
        expect(last_ai(page).locator(".text")).to_have_text(re.compile(r"(\S+ ){6}"), timeout=WAIT)
        assert inproc.cut() >= 1
        page.wait_for_selector("#state:not(.connected)", timeout=WAIT)
        page.wait_for_selector("#state.connected", timeout=WAIT)
        page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
        text = ai_text(page)
        assert page.locator(".msg.ai").count() == 1
        assert text == expected
        assert text == last_ai(page).get_attribute("data-end-content")
        assert "[" not in last_ai(page).inner_text()  # no [ConnectionLostError] or stop reason
        assert page.evaluate("window.streamcore.reconnectCount") == 1


def test_reasoning_is_shown_in_a_collapsible_block(browser):
    try:
        srv = InProcess(delay_ms=20, words=40, reasoning=True)
    except Exception as exc:  # the demo provider's `reasoning` option lands separately
        if "reasoning" in str(exc):
            pytest.skip(f"demo provider without reasoning: {exc}")
        raise
    try:
        with open_page(browser, srv.port) as page:
            ask(page, "Think before you answer")
            block = last_ai(page).locator("details.reasoning")
            expect(block).to_be_visible(timeout=WAIT)
            page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
            answer = ai_text(page)
            assert answer == last_ai(page).get_attribute("data-end-content")
            # Collapsed once the answer came; the reasoning is not part of the answer.
            assert block.evaluate("d => d.open") is False
            block.locator("summary").click()
            reasoning = block.locator(".reasoning-text").inner_text()
            assert reasoning.strip()
            assert reasoning not in answer
    finally:
        srv.stop()


def test_the_chat_follows_the_streaming_text(browser, server):
    with open_page(browser, server.port, width=390, height=700) as page:
        for i in range(3):
            ask(page, f"question {i}")
            page.wait_for_selector(f".msg.ai[data-done='1'] >> nth={i}", timeout=WAIT)
        ask(page, "one more, followed while it streams")
        expect(last_ai(page).locator(".text")).to_have_text(re.compile(r"(\S+ ){10}"), timeout=WAIT)
        at_bottom = "m => m.scrollHeight - m.scrollTop - m.clientHeight < 40"
        assert page.eval_on_selector("#messages", "m => m.scrollHeight > m.clientHeight")
        assert page.eval_on_selector("#messages", at_bottom)  # mid-stream
        page.wait_for_selector(".msg.ai[data-done='1'] >> nth=3", timeout=WAIT)
        assert page.eval_on_selector("#messages", at_bottom)


def test_phone_width_has_no_horizontal_overflow(browser, server):
    with open_page(browser, server.port, width=390, height=844) as page:
        ask(page, "A reply with a verylongwordthatdoesnotbreakbyitselfanywhereatallreally in it")
        page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
        page.fill("#objective-prompt", "Apprendre le piano")
        page.click("#generate")
        page.wait_for_selector("#objective h3", timeout=WAIT)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        box = page.locator("#send").bounding_box()
        assert box["x"] + box["width"] <= 390


# --- the monitor and the favicon --------------------------------------------------------


def test_monitor_shows_state_queue_rtt_and_chunk_rate(page):
    expect(page.locator("#state")).to_have_text("connected")
    expect(page.locator("#queue")).to_have_text("0")
    expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"), timeout=WAIT)
    ask(page, "Count my chunks")
    expect(page.locator("#cps")).to_have_text(re.compile(r"^\d+\.\d chunks/s$"), timeout=WAIT)
    page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
    rate = float(page.inner_text("#cps").split()[0])
    assert 0 < rate < 10_000


def test_favicon_is_served(page, server):
    assert page.locator("link[rel=icon]").get_attribute("href") == "/favicon.svg"
    response = page.request.get(f"http://127.0.0.1:{server.port}/favicon.svg")
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.body() == (ROOT / "streamcore" / "static" / "favicon.svg").read_bytes()


# --- the objective ----------------------------------------------------------------------


def test_generate_objective_and_tick_a_step(page):
    page.fill("#objective-prompt", "Apprendre le piano")
    page.select_option("#difficulty", "beginner")
    page.fill("#category", "music")
    page.click("#generate")
    page.wait_for_selector("#objective h3", timeout=WAIT)
    assert page.inner_text("#objective h3") == "Apprendre le piano"
    assert page.locator("#objective li").count() == 3
    page.locator("#objective li input").first.check()
    page.wait_for_selector("#objective li.done", timeout=WAIT)  # OBJECTIVE_UPDATED re-rendered it


def test_objective_generation_streams_and_can_be_stopped(browser):
    srv = Server(free_port(), config=_config(delay_ms=60))
    try:
        with open_page(browser, srv.port) as page:
            page.fill("#objective-prompt", "Apprendre la guitare")
            page.click("#generate")
            stream = page.locator("#objective-stream")
            expect(stream).to_have_text(re.compile(r"(\S+ ){3}"), timeout=WAIT)  # its text, streaming
            assert page.is_disabled("#generate")
            page.click("#objective-stop")
            expect(page.locator("#objective-status")).to_have_text("Generation stopped.", timeout=WAIT)
            assert page.is_enabled("#generate")
            assert page.is_disabled("#objective-stop")
            assert page.locator("#objective h3").count() == 0
    finally:
        srv.stop()


def test_failed_objective_update_reverts_the_checkbox_and_shows_the_error(browser, inproc):
    with open_page(browser, inproc.port) as page:
        page.fill("#objective-prompt", "Apprendre le piano")
        page.click("#generate")
        page.wait_for_selector("#objective h3", timeout=WAIT)
        inproc.forget_objectives()  # the server loses it: the next update fails
        box = page.locator("#objective li input").first
        box.click()
        expect(page.locator("#objective .objective-error")).to_contain_text("Could not update the step", timeout=WAIT)
        expect(box).not_to_be_checked()
        assert page.locator("#objective li.done").count() == 0
        # open_page asserts no uncaught error or unhandled rejection reached the page


def test_objective_is_marked_stale_after_a_server_restart(browser, server):
    with open_page(browser, server.port) as page:
        page.fill("#objective-prompt", "Apprendre le piano")
        page.click("#generate")
        page.wait_for_selector("#objective h3", timeout=WAIT)
        server.kill()
        page.wait_for_selector("#state.reconnecting", timeout=WAIT)
        restarted = Server(server.port)
        try:
            page.wait_for_selector("#state.connected", timeout=20_000)
            page.wait_for_selector("#objective.stale .stale-notice", timeout=WAIT)
            assert page.locator("#objective input:enabled").count() == 0
        finally:
            restarted.stop()


def test_survives_a_server_restart(browser, server, page):
    server.kill()
    page.wait_for_selector("#state.reconnecting", timeout=WAIT)
    page.wait_for_selector("#reconnect:not([hidden])", timeout=WAIT)
    # Offline: the message is queued and the queue size is visible.
    ask(page, "sent while offline")
    expect(page.locator("#queue")).to_have_text("1", timeout=5_000)
    restarted = Server(server.port)
    try:
        page.wait_for_selector("#state.connected", timeout=20_000)
        page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
        assert "sent while offline" in ai_text(page)
        assert page.inner_text("#queue") == "0"
    finally:
        restarted.stop()


def _config(**options: object) -> str:
    opts = ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as f:
        f.write(f'[provider]\nname = "demo"\noptions = {{ {opts} }}\n')
    return path


@pytest.mark.skipif(not os.environ.get("STREAMCORE_SCREENSHOTS"), reason="set STREAMCORE_SCREENSHOTS=1 to refresh docs/*.png")
def test_screenshots(browser):
    srv = Server(free_port(), config=_config(delay_ms=5, words=52, reasoning=True))
    try:
        for name, width, height in (("desktop", 1280, 820), ("phone", 390, 844)):
            with open_page(browser, srv.port, width=width, height=height) as page:
                ask(page, "How do I learn the piano?")
                page.wait_for_selector(".msg.ai[data-done='1']", timeout=WAIT)
                page.fill("#objective-prompt", "Apprendre le piano")
                page.select_option("#difficulty", "beginner")
                page.fill("#category", "music")
                page.click("#generate")
                page.wait_for_selector("#objective h3", timeout=WAIT)
                page.locator("#objective li input").first.check()
                page.wait_for_selector("#objective li.done", timeout=WAIT)
                expect(page.locator("#rtt")).to_have_text(re.compile(r"ms$"), timeout=WAIT)
                page.screenshot(path=str(ROOT / "docs" / f"demo-{name}.png"), full_page=True)
    finally:
        srv.stop()
