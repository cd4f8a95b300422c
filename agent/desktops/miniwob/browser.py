"""Finding Chromium and its driver, and opening MiniWoB++ task pages in them.

The ``miniwob`` package (Farama) ships every task's HTML and opens it through Selenium. It reads
``MINIWOB_CHROME_BINARY`` and ``MINIWOB_CHROMEDRIVER`` (both or neither); without them Selenium
Manager goes looking for a driver, which needs the network. :func:`find_browser` therefore always
resolves both paths itself — the variables when set, else ``chromium`` / ``chromium-browser`` /
``google-chrome`` and ``chromedriver`` on ``PATH`` (Debian: ``apt-get install chromium
chromium-driver``) — and exports them, so nothing is ever downloaded.

Two ways to open a task page:

- ``headless``: MiniWoB's own headless instance (``MiniWoBEnvironment`` with no render mode);
- ``desktop``: a visible Chromium ``--app`` window at a known position and size on the current X
  display (``DISPLAY``), opened by a MiniWoB instance whose driver we create with those flags.

Both keep the page's WebDriver, through which episodes start (``Math.seedrandom`` + MiniWoB's
``core.startEpisodeReal``) and rewards are read back (``WOB_DONE_GLOBAL``, ``WOB_RAW_REWARD_GLOBAL``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UserError

CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
DRIVER_NAMES = ("chromedriver",)
MODES = ("headless", "desktop")
TASK_W, TASK_H = 160, 210  # MiniWoB++'s task area in CSS pixels (miniwob.constants)
WINDOW_W, WINDOW_H = 500, 320  # the window MiniWoB opens (miniwob.constants)


class MiniWoBUnavailable(UserError):
    """MiniWoB++ cannot run here (package, browser or driver missing; no display for desktop mode)."""


@dataclass(frozen=True)
class BrowserPaths:
    chrome: str
    driver: str
    source: str  # "env" or "PATH"


def find_browser() -> BrowserPaths:
    """Chromium and chromedriver: ``MINIWOB_CHROME_BINARY`` / ``MINIWOB_CHROMEDRIVER`` or ``PATH``.

    Exports both variables so the ``miniwob`` package never asks Selenium Manager (network)."""
    chrome_env, driver_env = os.environ.get("MINIWOB_CHROME_BINARY"), os.environ.get("MINIWOB_CHROMEDRIVER")
    if chrome_env or driver_env:
        pairs = (("MINIWOB_CHROME_BINARY", chrome_env), ("MINIWOB_CHROMEDRIVER", driver_env))
        for name, value in pairs:
            if not value:
                raise MiniWoBUnavailable(f"{name} is not set; set MINIWOB_CHROME_BINARY and MINIWOB_CHROMEDRIVER together")
        for name, value in pairs:
            if not (Path(value).is_file() and os.access(value, os.X_OK)):
                raise MiniWoBUnavailable(f"{name}={value}: not an executable file")
        return BrowserPaths(chrome_env, driver_env, "env")  # type: ignore[arg-type]
    chrome = next((p for p in map(shutil.which, CHROME_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    if chrome is None:
        raise MiniWoBUnavailable("no Chromium found (looked for " + ", ".join(CHROME_NAMES)
                                 + " on PATH); install it (apt-get install chromium) or set MINIWOB_CHROME_BINARY")
    if driver is None:
        raise MiniWoBUnavailable("no chromedriver on PATH; install it (apt-get install chromium-driver) "
                                 "or set MINIWOB_CHROMEDRIVER")
    os.environ["MINIWOB_CHROME_BINARY"] = chrome
    os.environ["MINIWOB_CHROMEDRIVER"] = driver
    return BrowserPaths(chrome, driver, "PATH")


def check_available(mode: str = "headless") -> BrowserPaths:
    """Raise :class:`MiniWoBUnavailable` with one clear line when ``mode`` cannot run here."""
    if mode not in MODES:
        raise UserError(f"unknown MiniWoB mode {mode!r}; choose one of {', '.join(MODES)}")
    try:
        import miniwob  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as e:
        raise MiniWoBUnavailable(f"the MiniWoB++ suite needs the 'miniwob' and 'selenium' packages "
                                 f"(pip install miniwob selenium): {e}") from None
    paths = find_browser()
    if mode == "desktop" and not os.environ.get("DISPLAY"):
        raise MiniWoBUnavailable("desktop mode needs an X display: DISPLAY is not set (start Xvfb, or use --mode headless)")
    return paths


def task_html_dir() -> Path:
    import miniwob

    return Path(miniwob.__file__).resolve().parent / "html" / "miniwob"


def task_names() -> list[str]:
    """Every MiniWoB++ task shipped in the package (``<name>.html``)."""
    return sorted(p.stem for p in task_html_dir().glob("*.html"))


def chrome_options(mode: str, url: str | None = None, position: tuple[int, int] = (0, 0),
                   size: tuple[int, int] = (WINDOW_W, WINDOW_H)):
    """Chromium flags: headless for ``headless``; an undecorated ``--app`` window for ``desktop``."""
    from selenium import webdriver

    paths = find_browser()
    o = webdriver.ChromeOptions()
    o.binary_location = paths.chrome
    for a in ("no-sandbox", "disable-gpu", "disable-dev-shm-usage", "no-first-run", "no-default-browser-check",
              "disable-extensions", "disable-background-networking", "disable-component-update",
              "disable-sync", "password-store=basic", "force-device-scale-factor=1"):
        o.add_argument(a)
    if mode == "headless":
        o.add_argument("headless")
    else:
        o.add_argument(f"app={url}")
        o.add_argument(f"window-position={position[0]},{position[1]}")
        o.add_argument(f"window-size={size[0]},{size[1]}")
        o.add_experimental_option("excludeSwitches", ["enable-automation"])  # no info bar over the page
    return o


def open_env(task: str, mode: str = "headless", *, position: tuple[int, int] = (0, 0),
             size: tuple[int, int] = (WINDOW_W, WINDOW_H)):
    """A ``miniwob`` environment for ``task``: its Selenium instance holds the page's WebDriver.

    ``desktop`` mode opens a visible ``--app`` window at ``position`` with ``size`` on ``DISPLAY``."""
    check_available(mode)
    from miniwob.environment import MiniWoBEnvironment
    from miniwob.selenium_instance import SeleniumInstance
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if task not in task_names():
        raise UserError(f"unknown MiniWoB++ task {task!r} (not in {task_html_dir()})")

    class _Instance(SeleniumInstance):
        def create_driver(self) -> None:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support import expected_conditions as EC
            from selenium.webdriver.support.wait import WebDriverWait

            opts = chrome_options(mode, self.url, position, size)
            # Chromium leaves a singleton-socket folder in TMPDIR at every quit: give it a private
            # one, removed in close().
            self.tmp = tempfile.mkdtemp(prefix="dw-chromium-")
            service = Service(executable_path=find_browser().driver, env={**os.environ, "TMPDIR": self.tmp})
            self.driver = webdriver.Chrome(service=service, options=opts)
            self.driver.implicitly_wait(5)
            if mode == "headless":
                self.driver.get(self.url)
            WebDriverWait(self.driver, 10).until(EC.element_to_be_clickable((By.ID, self.SYNC_SCREEN_ID)))
            self.inner_width, self.inner_height = self.driver.execute_script(
                "return [window.innerWidth, window.innerHeight];")

        def close(self) -> None:
            super().close()
            if getattr(self, "tmp", None):
                shutil.rmtree(self.tmp, ignore_errors=True)

    class _Env(MiniWoBEnvironment):
        def _hard_reset_instance(self) -> None:
            if getattr(self, "instance", None):
                self.instance.close()
            self.instance = _Instance(index=0, **self.instance_kwargs)
            self.instance.start()
            self.instance.wait()

    try:
        return _Env(task, render_mode=None if mode == "headless" else "human")
    except MiniWoBUnavailable:
        raise
    except Exception as e:
        raise MiniWoBUnavailable(f"cannot start Chromium for MiniWoB++ ({mode}): {type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
