"""The browser viewer in headless Chromium: real desktop pixels reach the canvas (WebCodecs and JPEG),
fps and latency show from the first picture on. Takeover: tests/test_viewer_takeover.py."""

from __future__ import annotations

import base64
import os
import shutil
import time

import numpy as np
import pytest

from agent.desktops.virtual import VirtualDesktop
from agent.stream.server import ServerThread, StreamServer
from policies.actions import Click

CHROMIUM = os.environ.get("DW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)", allow_module_level=True)

SIZE = (640, 360)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _server() -> ServerThread:
    """A served click-checkboxes episode (it times out after 30 s of wall time at 20 fps)."""
    return ServerThread(StreamServer(VirtualDesktop("click-checkboxes", seed=3, size=SIZE, fps=20.0), port=0, fps=20.0))


@pytest.fixture(scope="module")
def served():
    with _server() as srv:
        yield srv


def _canvas_pixels(page) -> np.ndarray:
    """The viewer's canvas as RGBA, read with getImageData (sent as base64: a list of numbers takes seconds)."""
    data = page.evaluate("""() => {
        const c = document.getElementById('video');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = '';
        for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
        return {w: c.width, h: c.height, b64: btoa(s)};
    }""")
    return np.frombuffer(base64.b64decode(data["b64"]), np.uint8).reshape(data["h"], data["w"], 4)  # RGBA


def _open(browser, srv, extra=""):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{srv.port}/{extra}#token={srv.viewer_token}")
    page.wait_for_function("() => window.dwViewer && window.dwViewer.decoded >= 3 "
                           "&& window.dwViewer.mode !== 'connecting'", timeout=20000)
    return page, errors


def _compare(page, srv) -> float:
    got = _canvas_pixels(page)
    ref, _ = srv.wait_frame(0)
    bgra = ref.pixels
    assert got.shape[:2] == bgra.shape[:2]
    rgb_ref = bgra[..., 2::-1].astype(int)
    diff = np.abs(got[..., :3].astype(int) - rgb_ref)
    # the desktop has structure (windows, text): the canvas must not be flat
    assert got[..., :3].std() > 10
    return float(diff.mean())


@pytest.mark.parametrize("mode", ["auto", "jpeg"])
def test_desktop_pixels_reach_the_canvas(browser, served, mode):
    page, errors = _open(browser, served, "?format=jpeg" if mode == "jpeg" else "")
    try:
        state = page.evaluate("() => ({mode: window.dwViewer.mode, codec: window.dwViewer.codec, "
                              "errors: window.dwViewer.errors, hello: window.dwViewer.hello})")
        assert state["hello"]["role"] == "viewer"
        if mode == "jpeg":
            assert state["mode"] == "jpeg"
        else:
            # WebCodecs where this Chromium decodes the stream's codec, else the JPEG fallback
            assert state["mode"] in ("video", "jpeg")
            if state["mode"] == "video":
                assert state["codec"] == served.encoder.codec_string
        time.sleep(0.3)
        diff = _compare(page, served)
        assert diff < 6, f"canvas differs from the served frame by {diff:.1f} on average ({state['mode']})"
        assert not errors and not state["errors"], (errors, state["errors"])
        # live numbers on the page
        page.wait_for_function("() => window.dwViewer.fps > 0 && window.dwViewer.latencyMs !== null", timeout=10000)
        lat = page.evaluate("() => window.dwViewer.latencyMs")
        assert 0 <= lat < 2000
    finally:
        page.close()


def test_video_mode_draws_desktop_pixels_every_time(browser, served):
    """The stage in video mode holds the desktop (non-black, varied, equal to the served frame), on every
    fresh page: the black stage seen in headless screenshots was the screenshot taken before the first
    picture (the page now paints JPEG pictures until the decoder is ready), not a decoding failure."""
    for attempt in range(3):
        page, errors = _open(browser, served)
        try:
            if page.evaluate("() => window.dwViewer.mode") != "video":
                pytest.skip("this Chromium cannot decode the stream's codec with WebCodecs")
            page.wait_for_function("() => window.dwViewer.videoFrames >= 3 && window.dwViewer.lastKind === 'video'",
                                   timeout=10000)
            got = _canvas_pixels(page)[..., :3]
            assert got.mean() > 40 and got.std() > 10, f"attempt {attempt}: a dark or flat stage"
            assert len(np.unique(got.reshape(-1, 3), axis=0)) > 50, f"attempt {attempt}: too few colours"
            diff = _compare(page, served)
            assert diff < 6, f"attempt {attempt}: canvas differs from the served frame by {diff:.1f}"
            assert not errors and not page.evaluate("() => window.dwViewer.errors")
        finally:
            page.close()


def test_fps_and_latency_show_values_on_a_static_screen(browser, served):
    """Nothing moves on the served screen; the bar still shows fps and latency within a second."""
    for extra in ("", "?format=jpeg"):
        page, _ = _open(browser, served, extra)
        try:
            page.wait_for_function("() => document.getElementById('fps').textContent !== '-' && "
                                   "document.getElementById('latency').textContent.endsWith('ms p50') && "
                                   "document.getElementById('server').textContent.startsWith('capture')",
                                   timeout=3000)
            fps = float(page.locator("#fps").inner_text())
            assert 5 <= fps <= 40, fps  # served at 20 fps
        finally:
            page.close()


def test_overlay_shows_the_agents_clicks(browser):
    # a fresh episode: the module's shared one may have timed out by now, and a finished episode
    # ignores the click, so the cursor would not move
    with _server() as srv:
        page, _ = _open(browser, srv)
        try:
            srv.apply_local(Click(0.25, 0.75))
            page.wait_for_function("() => window.dwViewer.clicks.length > 0", timeout=10000)
            click = page.evaluate("() => window.dwViewer.clicks[0]")
            assert click["x"] == pytest.approx(0.25) and click["y"] == pytest.approx(0.75)
            cursor = page.evaluate("() => window.dwViewer.cursor")
            assert cursor[0] == pytest.approx(0.25, abs=0.01)
        finally:
            page.close()


def test_viewer_without_token_is_refused(browser, served):
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{served.port}/")
        page.wait_for_function("() => window.dwViewer && window.dwViewer.closed !== null", timeout=10000)
        assert page.evaluate("() => window.dwViewer.decoded") == 0
    finally:
        page.close()


def test_the_viewer_over_wss_with_a_self_signed_certificate_draws_desktop_pixels(browser):
    from agent.stream.tls import self_signed_context

    ctx, _pem, _fp = self_signed_context("127.0.0.1")
    desk = VirtualDesktop("click-checkboxes", seed=3, size=SIZE, fps=20.0)
    with ServerThread(StreamServer(desk, port=0, fps=20.0, ssl_context=ctx)) as srv:
        context = browser.new_context(ignore_https_errors=True)  # the user accepted the certificate once
        page = context.new_page()
        try:
            page.goto(f"https://127.0.0.1:{srv.port}/#token={srv.viewer_token}")
            page.wait_for_function("() => window.dwViewer && window.dwViewer.decoded >= 3", timeout=20000)
            assert page.evaluate("() => window.isSecureContext") is True
            time.sleep(0.3)
            diff = _compare(page, srv)
            assert diff < 6, f"canvas differs from the served frame by {diff:.1f} on average"
        finally:
            context.close()
