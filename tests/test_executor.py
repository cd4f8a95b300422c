"""The executor without a display: coordinate mapping at several scales, and every rule."""

from __future__ import annotations

import math

import pytest

from agent.desktops import ActionRefused, DesktopError
from agent.desktops.executor import (
    Executor,
    canonical_combo,
    from_input_space,
    terminal_confirm,
    to_input_space,
)
from agent.desktops.safety import hotkey_to_pynput
from capture import Screen
from policies.actions import Click, Done, Drag, Key, MouseDown, MouseUp, Move, Scroll, Type, Wait

SCALES = (1.0, 1.25, 1.5, 2.0)


def covering_pixel_span(ix: int, iy: int, s: float) -> tuple[float, float, float, float]:
    """The physical area an input point covers at input scale ``s``."""
    return ix * s, iy * s, (ix + 1) * s, (iy + 1) * s


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("origin", [(0, 0), (1920, 0), (-2560, -300)])
def test_mapping_lands_on_the_target_pixel(scale, origin):
    """A target pixel's centre maps to an input point whose physical span covers that centre."""
    screen = Screen(2880, 1800, origin[0], origin[1], scale)
    for px in (0, 1, 2, 3, 7, 100, 1439, 1440, 2879):
        for py in (0, 1, 5, 899, 1799):
            x, y = screen.to_normalised(px, py)
            assert screen.to_pixels(x, y) == (px, py)
            ix, iy = to_input_space(x, y, screen, scale)
            x0, y0, x1, y1 = covering_pixel_span(ix, iy, scale)
            cx, cy = screen.left + px + 0.5, screen.top + py + 0.5
            assert x0 <= cx < x1 and y0 <= cy < y1, (px, py, ix, iy)
            # and back: the input point reads as a position on the target (within one point)
            bx, by = from_input_space(ix, iy, screen, scale)
            bpx, bpy = screen.to_pixels(bx, by)
            assert abs(bpx - px) <= math.ceil(scale) and abs(bpy - py) <= math.ceil(scale)


@pytest.mark.parametrize("scale", SCALES)
def test_mapping_hits_a_widget_at_every_scale(scale):
    """A 20x10-point button drawn at this scale is hit by a click at its normalised centre."""
    screen = Screen(round(1280 * scale), round(800 * scale), 0, 0, scale)
    bx, by, bw, bh = 300, 200, 20, 10  # points
    cx, cy = (bx + bw / 2) * scale, (by + bh / 2) * scale  # physical centre
    x, y = cx / screen.width, cy / screen.height
    ix, iy = to_input_space(x, y, screen, scale)
    assert bx <= ix < bx + bw and by <= iy < by + bh
    assert abs(ix - (bx + bw // 2)) <= 1 and abs(iy - (by + bh // 2)) <= 1


def test_mapping_x11_input_in_pixels_even_when_hidpi():
    screen = Screen(3840, 2160, 0, 0, 2.0)  # Xft.dpi 192, but X11 input is in physical pixels
    assert to_input_space(0.5, 0.5, screen, 1.0) == (1920, 1080)
    assert to_input_space(0.5, 0.5, screen, 2.0) == (960, 540)
    assert to_input_space(1.0, 1.0, screen, 1.0) == (3839, 2159)
    with pytest.raises(ValueError):
        to_input_space(0.5, 0.5, screen, 0)


class FakeBackend:
    def __init__(self, size=(640, 480)):
        self.calls = []
        self._size = size
        self.raise_next = None

    def size(self):
        return self._size

    def position(self):
        return (10, 20)

    def __getattr__(self, name):
        def call(*args, **kw):
            if self.raise_next is not None:
                e, self.raise_next = self.raise_next, None
                raise e
            self.calls.append((name, args, kw))
        return call


def ex(**kw):
    backend = kw.pop("backend", FakeBackend())
    return Executor(Screen(640, 480), backend=backend, **kw), backend


def test_every_action_type_reaches_pyautogui():
    e, b = ex(max_actions_per_second=None)
    for a in [Move(0.5, 0.5), Click(0.25, 0.5, button="right", count=2), MouseDown(0.1, 0.1), MouseUp(0.2, 0.2),
              Scroll(0.5, 0.5, dx=2, dy=3), Key("enter"), Key("ctrl+shift+t"), Key("super+e"), Key("escape"),
              Type("Hi!\n"), Wait(0.0), Done()]:
        e.apply(a)
    names = [c[0] for c in b.calls]
    assert names == ["moveTo", "click", "mouseDown", "mouseUp", "moveTo", "scroll", "hscroll", "press", "hotkey",
                     "hotkey", "press", "write"]
    assert b.calls[0][1] == (320, 240)
    assert b.calls[1][1] == (160, 240) and b.calls[1][2]["clicks"] == 2 and b.calls[1][2]["button"] == "right"
    assert b.calls[5][1] == (-3,) and b.calls[6][1] == (2,)  # ours dy>0 down = pyautogui negative
    assert b.calls[8][1] == ("ctrl", "shift", "t") and b.calls[9][1] == ("win", "e") and b.calls[10][1] == ("esc",)
    assert e.sent == 10


def test_drag_moves_in_steps():
    e, b = ex()
    e.apply(Drag(0.1, 0.1, 0.5, 0.5))
    names = [c[0] for c in b.calls]
    assert names[0] == "mouseDown" and names[-1] == "mouseUp" and names.count("moveTo") >= 4
    assert b.calls[-1][1] == (320, 240)


def test_dry_run_never_touches_the_backend():
    e, b = ex(dry_run=True)
    for a in [Move(0.5, 0.5), Click(0.1, 0.1), Type("x"), Key("enter"), Drag(0, 0, 1, 1), Scroll(0.5, 0.5, dy=1)]:
        e.apply(a)
    assert [c for c in b.calls if c[0] != "size"] == [] and len(e.dry_log) == 6
    assert "(320,240)" in e.dry_log[0]


def test_region_refusal_checks_both_drag_ends():
    e, b = ex(region=(0.25, 0.25, 0.75, 0.75))
    e.apply(Click(0.5, 0.5))
    for a in [Click(0.1, 0.5), Drag(0.5, 0.5, 0.9, 0.5), Scroll(0.8, 0.8, dy=1)]:
        with pytest.raises(ActionRefused, match="outside the allowed region"):
            e.apply(a)
    e.apply(Key("a"))  # keyboard input has no position
    assert e.refused == 3
    with pytest.raises(ValueError):
        ex(region=(0.5, 0.5, 0.4, 0.9))


def test_deny_list_ignores_order_and_aliases():
    e, _ = ex(deny_keys=("ctrl+alt+delete", "alt+f4", "super+l", "cmd+q"))
    for combo in ("ctrl+alt+delete", "delete+ctrl+alt", "ALT+F4", "win+l", "meta+l", "super+q"):
        with pytest.raises(ActionRefused, match="deny list"):
            e.apply(Key(combo))
    e.apply(Key("ctrl+alt+t"))
    assert canonical_combo("cmd+option+esc") == frozenset({"super", "alt", "escape"})


def test_rate_limit_allows_at_most_the_rate_within_any_second():
    now = [0.0]
    e, b = ex(max_actions_per_second=5, clock=lambda: now[0])
    for _ in range(5):
        e.apply(Move(0.5, 0.5))
    with pytest.raises(ActionRefused, match="rate limit"):
        e.apply(Move(0.5, 0.5))
    e.apply(Wait(0.0))  # not counted
    now[0] += 0.5  # a token bucket would have refilled 2.5 actions here: 7 in 0.5 s
    with pytest.raises(ActionRefused, match="rate limit"):
        e.apply(Move(0.5, 0.5))
    now[0] = 1.0  # the first action leaves the one-second window
    for _ in range(5):
        e.apply(Move(0.5, 0.5))
    with pytest.raises(ActionRefused, match="rate limit"):
        e.apply(Move(0.5, 0.5))
    assert len(b.calls) == 10


def test_rate_limiter_never_passes_more_than_the_rate_in_any_window():
    import random

    from agent.desktops.executor import RateLimiter

    rng = random.Random(0)
    for rate in (0.5, 1, 3, 20):
        now = [0.0]
        lim = RateLimiter(rate, lambda now=now: now[0])
        passed = []
        for _ in range(2000):
            now[0] += rng.expovariate(rate * 3)
            if lim.take():
                passed.append(now[0])
        n, window = max(1, int(rate)), max(1, int(rate)) / rate
        for i in range(len(passed) - n):  # any n + 1 passed actions span at least the window
            assert passed[i + n] - passed[i] >= window - 1e-9, (rate, i)
        assert len(passed) >= 0.7 * rate * now[0]  # and the limiter lets the rate through


class StepFailBackend(FakeBackend):
    """Raises on the n-th call of ``name``."""

    def __init__(self, name, n=1):
        super().__init__()
        self.fail_name, self.fail_n = name, n

    def __getattr__(self, name):
        def call(*args, **kw):
            self.calls.append((name, args, kw))
            if name == self.fail_name:
                self.fail_n -= 1
                if self.fail_n == 0:
                    raise OSError(f"{name} failed")
        return call


def test_a_drag_failing_part_way_releases_the_button():
    e, b = ex(backend=StepFailBackend("moveTo", 3))
    with pytest.raises(DesktopError, match="input failed"):
        e.apply(Drag(0.1, 0.1, 0.9, 0.9))
    assert b.calls[-1][0] == "mouseUp" and b.calls[-1][2] == {"button": "left"} and e.held == []


def test_a_key_combo_failing_part_way_releases_every_key():
    e, b = ex(backend=StepFailBackend("hotkey"))
    with pytest.raises(DesktopError):
        e.apply(Key("ctrl+shift+t"))
    assert [c for c in b.calls if c[0] == "keyUp"] == [("keyUp", ("t",), {}), ("keyUp", ("shift",), {}),
                                                       ("keyUp", ("ctrl",), {})]
    assert e.held == []


def test_a_refusal_or_a_stop_releases_a_held_button():
    e, b = ex(region=(0.0, 0.0, 0.5, 0.5))
    e.apply(MouseDown(0.25, 0.25))
    assert e.held == ["button:left"]
    with pytest.raises(ActionRefused):
        e.apply(Click(0.9, 0.9))
    assert e.held == [] and b.calls[-1] == ("mouseUp", (), {"button": "left"})
    e.apply(MouseDown(0.25, 0.25, button="right"))
    e.apply(MouseUp(0.25, 0.25, button="right"))
    assert e.held == [] and e.release_all() == []
    e.apply(MouseDown(0.25, 0.25))
    e.stop_event.set()  # a stop mid-drag: the drag ends, the button is let go
    with pytest.raises(DesktopError, match="stopped during drag"):
        e.apply(Drag(0.1, 0.1, 0.4, 0.4))
    assert e.held == [] and b.calls[-1] == ("mouseUp", (), {"button": "left"})


def test_confirmation_and_terminal_refusal_without_tty():
    e, b = ex(confirm=lambda a: False)
    with pytest.raises(ActionRefused, match="not confirmed"):
        e.apply(Click(0.5, 0.5))
    e.apply(Move(0.5, 0.5))

    class NotATty:
        def isatty(self):
            return False

    assert terminal_confirm(Click(0.5, 0.5), NotATty()) is False


def test_type_refuses_what_it_cannot_type():
    e, b = ex()
    with pytest.raises(ActionRefused, match="ASCII"):
        e.apply(Type("héllo"))
    assert b.calls == []


def test_failsafe_and_backend_errors_become_desktop_errors():
    e, b = ex()

    class FailSafeException(Exception):
        pass

    b.raise_next = FailSafeException("corner")
    with pytest.raises(DesktopError, match="failsafe"):
        e.apply(Click(0.5, 0.5))
    b.raise_next = OSError("X connection broken")
    with pytest.raises(DesktopError, match="input failed"):
        e.apply(Click(0.5, 0.5))


def test_own_moves_never_land_on_a_failsafe_corner():
    e, b = ex()
    e.apply(Move(0.0, 0.0))
    e.apply(Move(1.0, 1.0))
    e.apply(Move(1.0, 0.0))
    assert [c[1] for c in b.calls] == [(1, 0), (638, 479), (638, 0)]
    e2, b2 = ex(failsafe=False)
    e2.apply(Move(0.0, 0.0))
    assert b2.calls[-1][1] == (0, 0)


def test_position_is_normalised():
    e, _ = ex()
    assert e.position() == pytest.approx(((10 + 0.5) / 640, (20 + 0.5) / 480))


def test_hotkey_spec():
    assert hotkey_to_pynput("ctrl+alt+shift+q") == "<ctrl>+<alt>+<shift>+q"
    assert hotkey_to_pynput("super+f12") == "<cmd>+<f12>"
    with pytest.raises(ValueError):
        hotkey_to_pynput("ctrl+nosuchkey")


def test_confirm_classes_from_the_command_line():
    from agent.cli.commands.run import _confirm_rule
    from agent.errors import UserError
    from policies.actions import Click, Key, Move, Type

    rule = _confirm_rule("key,type")
    assert rule(Key("ctrl+c")) and rule(Type("secret"))
    assert not rule(Click(0.5, 0.5)) and not rule(Move(0.1, 0.1))
    default = _confirm_rule("all")
    assert default(Click(0.5, 0.5)) and not default(Move(0.1, 0.1))
    with pytest.raises(UserError, match="unknown action class 'teleport'"):
        _confirm_rule("key,teleport")
