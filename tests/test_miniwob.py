"""MiniWoB++ suite: key mapping and experts offline; a headless smoke run and one desktop-mode task
(Chromium on Xvfb, mss + pyautogui) end to end, recorded and replayed. Skips with a reason where
``miniwob``/``selenium``, Chromium or chromedriver are not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.desktops import ActionRefused
from agent.errors import UserError
from policies.actions import Click, Key, Type


def _need_browser():
    pytest.importorskip("miniwob", reason="pip install miniwob selenium")
    pytest.importorskip("selenium", reason="pip install miniwob selenium")
    from agent.desktops.miniwob.browser import MiniWoBUnavailable, find_browser

    try:
        find_browser()
    except MiniWoBUnavailable as e:
        pytest.skip(str(e))


def test_key_mapping():
    from agent.desktops.miniwob.desktop import miniwob_key

    assert miniwob_key(Key("enter")) == "<Enter>"
    assert miniwob_key(Key("ctrl+a")) == "C-a"
    assert miniwob_key(Key("ctrl+shift+tab")) == "C-S-<Tab>"
    assert miniwob_key(Key("space")) == " "
    with pytest.raises(ActionRefused):
        miniwob_key(Key("volumeup"))
    with pytest.raises(ActionRefused):
        miniwob_key(Key("shift"))


def _el(**kw):
    base = {"tag": "button", "id": "", "type": "", "dtype": "", "cls": "", "text": "", "title": "", "label": "",
            "x": 10.0, "y": 60.0, "w": 40.0, "h": 20.0, "checked": False, "value": None, "focused": False,
            "sel": None, "visible": True}
    return {**base, **kw}


def test_experts_offline():
    from agent.desktops.miniwob.experts import EXPERTS, ExpertError

    s = {"els": [_el(text="no", x=0), _el(text="ok", x=80)], "animating": 0, "accordion_open": 0, "pushed": None}
    (a,) = EXPERTS["click-button"](s, 'Click on the "ok" button.')
    assert isinstance(a, Click) and a.x == pytest.approx(100 / 160) and a.y == pytest.approx(70 / 210)
    with pytest.raises(ExpertError):
        EXPERTS["click-button"](s, 'Click on the "cancel" button.')
    # typing: focus, select what is there, type, then submit
    tt = _el(tag="input", id="tt", type="text", value="")
    sub = _el(id="subbtn", text="Submit", y=120)
    u = 'Enter "Ann" into the text field and press Submit.'
    assert isinstance(EXPERTS["enter-text"]({"els": [tt, sub]}, u)[0], Click)
    tt.update(focused=True, value="x", sel=[1, 1])
    assert EXPERTS["enter-text"]({"els": [tt, sub]}, u) == [Key("ctrl+a")]
    tt.update(sel=[0, 1])
    assert EXPERTS["enter-text"]({"els": [tt, sub]}, u) == [Type("Ann")]
    tt.update(value="Ann")
    assert EXPERTS["enter-text"]({"els": [tt, sub]}, u)[0] == Click(30 / 160, 130 / 210)
    assert len(EXPERTS) >= 17


def test_find_browser_env_errors(monkeypatch):
    from agent.desktops.miniwob.browser import MiniWoBUnavailable, find_browser

    monkeypatch.setenv("MINIWOB_CHROME_BINARY", "/nonexistent/chrome")
    monkeypatch.delenv("MINIWOB_CHROMEDRIVER", raising=False)
    with pytest.raises(MiniWoBUnavailable, match="together"):
        find_browser()
    assert issubclass(MiniWoBUnavailable, UserError)


@pytest.mark.slow
def test_headless_smoke():
    """3 tasks x 3 episodes headless with the scripted expert, plus MiniWoB key/type actions."""
    _need_browser()
    from agent.desktops.miniwob.evaluate import run_task
    from policies.builtin import ScriptedPolicy

    results = []
    for task in ("click-button", "enter-text", "click-checkboxes"):
        results += run_task(task, range(100_000, 100_003), ScriptedPolicy())
    assert [r["success"] for r in results] == [True] * 9, results


@pytest.mark.slow
def test_headless_frames_and_actions():
    _need_browser()
    from agent.desktops.miniwob import open_miniwob

    with open_miniwob("enter-text", seed=5) as d:
        tmp = Path(d.browser.instance.tmp)  # Chromium's own temp folders go here, not into /tmp
        assert tmp.is_dir()
        f = d.observe()
        assert f.pixels.shape == (210, 160, 4) and d.screen.size == (160, 210)
        assert d.info() == {"kind": "miniwob", "task": "enter-text", "seed": 5, "mode": "headless",
                            "task_size": [160, 210]}
        assert "Enter" in d.instruction and not d.finished
        while not d.finished:
            for a in d.oracle.expert_actions():
                d.apply(a)
        assert d.success is True and d.reward > 0
    assert not tmp.exists()  # removed with the browser: nothing is left behind in /tmp


@pytest.mark.slow
@pytest.mark.xvfb
def test_desktop_mode_record_and_replay(xvfb, tmp_path):
    """click-button in a Chromium window on Xvfb: mss capture, pyautogui input, reward from the page;
    the recorded session replays with a non-oracle policy."""
    _need_browser()
    from agent.desktops.miniwob.evaluate import record_demos
    from agent.sessions.format import open_session
    from agent.sessions.replay import replay_session
    from policies.builtin import RandomPolicy

    results = record_demos(["click-button"], 2, tmp_path, seed=100_000, mode="desktop")
    assert [r["success"] for r in results] == [True, True], results
    s = open_session(results[0]["session"])
    assert s.desktop["kind"] == "miniwob" and s.desktop["mode"] == "desktop"
    assert s.screen.size == (160, 210) and s.actions()
    out = replay_session(s, RandomPolicy(seed=1))
    assert out["frames_decoded"] >= 2 and out["recorded_actions"] == len(s.actions())
    json.dumps(out)


def test_the_pointer_parks_where_nothing_is_drawn():
    from agent.desktops.miniwob.desktop import PARK_SPOTS, blank_spot

    page = np.full((210, 160, 4), 255, np.uint8)
    assert blank_spot(page) == PARK_SPOTS[0]
    page[195:210, 78:120] = 0  # something drawn at the bottom middle: the next spot
    assert blank_spot(page) == PARK_SPOTS[1]
    page[:] = np.random.default_rng(0).integers(0, 255, page.shape, dtype=np.uint8)
    assert blank_spot(page) == PARK_SPOTS[-1]  # nowhere blank: mid-task, as headless mode parks


@pytest.mark.xvfb
def test_a_desktop_episode_starts_on_the_headless_screen(xvfb):
    """Desktop mode's first frame (mss) is MiniWoB's own headless screenshot of the same episode,
    pixel for pixel: no button is darkened by the parked pointer (enter-text's Submit was)."""
    _need_browser()
    from agent.desktops.miniwob.desktop import open_miniwob

    frames = {}
    for mode in ("headless", "desktop"):
        d = open_miniwob("enter-text", 100_014, mode)
        try:
            frames[mode] = d.observe().pixels[..., :3].astype(int)
        finally:
            d.close()
    assert frames["desktop"].shape == frames["headless"].shape == (210, 160, 3)
    assert (np.abs(frames["desktop"] - frames["headless"]).max(-1) > 8).sum() == 0


def test_dagger_demos_record_dom_expert_labels(tmp_path):
    """A policy drives MiniWoB++; the DOM expert labels each state; training learns the labels."""
    _need_browser()
    from agent.desktops.miniwob.evaluate import record_demos
    from agent.sessions.format import EXPERT_LABEL, open_session
    from agent.training.dataset import session_samples
    from policies.builtin import RandomPolicy
    from policies.pixel.configuration import PixelConfig

    results = record_demos(["click-test"], 2, tmp_path, seed=100_000, dagger=RandomPolicy(seed=3), max_steps=4)
    assert len(results) == 2 and all(r["policy"] == "random+expert-labels" for r in results)
    for r in results:  # kept whether or not the random policy succeeded
        s = open_session(r["session"])
        labels = [e for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_LABEL]
        assert labels and all(isinstance(e.action, Click) for e in labels)  # click-test: click the button
        cfg = PixelConfig.for_size("pixel-tiny", max_glimpses=8)
        assert len(session_samples(s.path, cfg)["labels"]) == len(labels)


def test_demos_record_the_instruction_word_naming_each_target(tmp_path):
    """Each demo step records the word that names what the expert clicks (a checkbox's label, then
    Submit), and training turns it into the sample's word label."""
    _need_browser()
    from agent.desktops.miniwob.evaluate import record_demos
    from agent.sessions.format import EXPERT_TARGET, open_session
    from agent.training.dataset import session_samples
    from policies.pixel.codec import LABEL_FIELDS
    from policies.pixel.configuration import PixelConfig

    (r,) = record_demos(["click-checkboxes"], 1, tmp_path, seed=2)
    s = open_session(r["session"])
    words = [e.raw["word"] for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_TARGET]
    assert words[-1] == "Submit" and len(words) == len(s.actions(("human", "policy")))
    assert all(f" {w}" in s.instruction for w in words)
    labels = session_samples(s.path, PixelConfig.for_size("pixel-tiny", max_glimpses=8))["labels"]
    raw = s.instruction.encode()
    assert [raw[i:].split(b" ")[0].rstrip(b",.").decode() for i in labels[:, LABEL_FIELDS.index("word")]] == words


def test_a_demo_step_no_word_names_is_labelled_so(tmp_path):
    """A step whose target no instruction word names (a text field) is recorded with word None, and
    training labels it NO_WORD: a snapping model learns not to move there."""
    _need_browser()
    from agent.desktops.miniwob.evaluate import record_demos
    from agent.sessions.format import EXPERT_TARGET, open_session
    from agent.training.dataset import session_samples
    from policies.pixel.codec import LABEL_FIELDS, NO_WORD
    from policies.pixel.configuration import PixelConfig

    (r,) = record_demos(["enter-password"], 1, tmp_path, seed=2)
    s = open_session(r["session"])
    words = [e.raw["word"] for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_TARGET]
    assert len(words) == len(s.actions(("human", "policy"))) and words[0] is None  # the first field
    labels = session_samples(s.path, PixelConfig.for_size("pixel-tiny", max_glimpses=8))["labels"]
    assert labels[0, LABEL_FIELDS.index("word")] == NO_WORD


def test_named_word_is_a_whole_word_of_the_instruction():
    from agent.desktops.miniwob.experts import named_word

    u = 'Click on the link "mauris,". Select Ok3, okay and click Submit.'
    assert named_word(u, "mauris,") == "mauris" and named_word(u, " Submit ") == "Submit"
    assert named_word(u, "ok") is None and named_word(u, "Tab #2") is None and named_word(u, "") is None


@pytest.mark.slow
def test_dw_eval_miniwob_json(capsys):
    _need_browser()
    from agent.cli.main import main

    assert main(["eval", "--suite", "miniwob", "--tasks", "click-test", "--episodes", "2", "--policy", "scripted",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["suite"] == "miniwob" and doc["mode"] == "headless"
    assert doc["summary"]["tasks"]["click-test"]["scripted"]["success_rate"] == 1.0
    assert main(["eval", "--suite", "miniwob", "--tasks", "no-such-task"]) == 2


def test_page_words_cut_into_a_tile_bank(tmp_path):
    import random

    import numpy as np

    _need_browser()
    from agent.desktops.miniwob.desktop import MiniWoBBrowser, open_miniwob
    from agent.desktops.miniwob.reading import bank_source, cut_bank, page_words, save_bank

    with MiniWoBBrowser("click-test-2", "headless") as browser:
        desk = open_miniwob("click-test-2", 7, "headless", browser=browser)
        words = dict(page_words(browser.driver))
        desk.close()
    assert {"Click", "button", "ONE", "TWO"} <= words.keys()  # the instruction bar's and the buttons'
    x0, y0, x1, y1 = words["ONE"]
    assert 0 <= x0 < x1 <= 160 and 50 <= y0 < y1 <= 210  # below the instruction bar, inside the task area
    bank = cut_bank(["click-test-2"], pages=2, seed=10, tile_pt=32, glimpse_px=24, per_page=8)
    assert bank["tiles"].shape[1:] == (24, 24, 3) and len(bank["tiles"]) == len(bank["words"]) == len(bank["seeds"])
    assert set(bank["seeds"]) == {10, 11} and {"ONE", "TWO"} & set(bank["words"])
    save_bank(bank, tmp_path / "bank.npz")
    source = bank_source(tmp_path / "bank.npz")
    tiles, texts = source(random.Random(0), 5, True, 32, 24)  # held out: page 11's tiles only
    odd = {bytes(t) for t in bank["tiles"][bank["seeds"] == 11]}
    assert tiles.shape == (5, 24, 24, 3) and all(bytes(t) in odd for t in tiles) and len(texts) == 5
    with pytest.raises(UserError, match="not the reader's tiles of 64 points"):
        source(random.Random(0), 1, False, 64, 48)
    one_page = {k: (v[bank["seeds"] == 10] if k in ("tiles", "words", "seeds") else v) for k, v in bank.items()}
    save_bank(one_page, tmp_path / "even.npz")
    with pytest.raises(UserError, match="odd"):
        bank_source(tmp_path / "even.npz")
    inverted = {**bank, "tiles": 255 - bank["tiles"], "seeds": bank["seeds"] + 100}  # pages 110 and 111
    save_bank(inverted, tmp_path / "more.npz")
    both = bank_source([tmp_path / "bank.npz", tmp_path / "more.npz"])  # several banks draw as one
    tiles, texts = both(random.Random(0), 40, True, 32, 24)
    first, second = ({bytes(t) for t in b["tiles"][b["seeds"] % 2 == 1]} for b in (bank, inverted))
    got = [bytes(t) for t in tiles]
    assert all(t in first | second for t in got) and first & set(got) and second & set(got) and len(texts) == 40
    save_bank({**one_page, "tile_pt": np.int64(64)}, tmp_path / "big.npz")
    with pytest.raises(UserError, match="different sizes"):
        bank_source([tmp_path / "bank.npz", tmp_path / "big.npz"])
    # read windows: each names the word centred in it (PixelConfig.match_window)
    window = (64, 32, 64, 32)
    windows = cut_bank(["click-test-2"], pages=2, seed=10, tile_pt=32, per_page=8, window=window)
    assert windows["tiles"].shape[1:] == (32, 64, 3) and {"ONE", "TWO"} & set(windows["words"])
    save_bank(windows, tmp_path / "windows.npz")
    wsource = bank_source(tmp_path / "windows.npz")
    assert wsource(random.Random(0), 3, False, 32, 48, window=window)[0].shape == (3, 32, 64, 3)
    with pytest.raises(UserError, match="not the reader's tiles of 32 points"):
        wsource(random.Random(0), 1, False, 32, 48)
    with pytest.raises(UserError, match="different sizes"):
        bank_source([tmp_path / "bank.npz", tmp_path / "windows.npz"])


@pytest.mark.parametrize("argv, message", [
    (["--pages", "1"], "--pages must be at least 2"),
    (["--tile-pt", "4"], "--tile-pt and --glimpse-px must be at least 8"),
    (["--glimpse-px", "0"], "--tile-pt and --glimpse-px must be at least 8"),
])
def test_tiles_rejects_bad_arguments_before_opening_a_browser(argv, message, capsys, tmp_path):
    from agent.desktops.miniwob.cli import main

    assert main(["tiles", "--out", str(tmp_path / "bank.npz"), *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "bank.npz").exists()
