"""A private Xvfb X server: start one at any size, wait until it accepts clients, stop it.

Used by the live benchmarks (``dw bench capture|loop|baseline``) and by the live-desktop tests
(``tests/conftest.py`` wraps :func:`start_xvfb` and skips where Xvfb is not installed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass


class XvfbUnavailable(RuntimeError):
    """Xvfb is not installed (``apt-get install xvfb``)."""


@dataclass
class Xvfb:
    display: str
    width: int
    height: int
    proc: subprocess.Popen

    @property
    def env(self) -> dict:
        return {**os.environ, "DISPLAY": self.display}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_xvfb(self.proc)

    def __enter__(self) -> Xvfb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_display() -> int:
    for n in range(90 + os.getpid() % 300, 1000):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


def start_xvfb(width: int = 640, height: int = 480, timeout: float = 10.0, depth: int = 24,
               extra_args: tuple[str, ...] = ()) -> Xvfb:
    """Start ``Xvfb :N -screen 0 WxHxD -nolisten tcp`` on a free N and wait until it accepts clients.

    ``extra_args`` go to Xvfb as they are (``("-extension", "RECORD")`` turns an extension off).

    Raises :class:`XvfbUnavailable` when Xvfb is not installed, RuntimeError when it will not start.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        raise XvfbUnavailable("Xvfb is not installed (apt-get install xvfb)")
    last_err = ""
    for _ in range(3):
        n = free_display()
        proc = subprocess.Popen(
            [exe, f":{n}", "-screen", "0", f"{width}x{height}x{depth}", "-nolisten", "tcp", "-noreset",
             *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_err = proc.stderr.read().decode(errors="replace")[-500:]
                break
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                r = subprocess.run(["xdpyinfo"], env={**os.environ, "DISPLAY": f":{n}"}, capture_output=True) \
                    if shutil.which("xdpyinfo") else subprocess.CompletedProcess([], 0)
                if r.returncode == 0:
                    return Xvfb(f":{n}", width, height, proc)
            time.sleep(0.05)
        stop_xvfb(proc)
    raise RuntimeError(f"Xvfb did not start: {last_err}")


def stop_xvfb(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
