"""hf-vlm: the output parser on real model output strings, and the policy end to end with a tiny
random Qwen2-VL (no download: config with small dims, in-memory byte-level tokenizer)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from policies.actions import Click, Done, Drag, Key, Move, Scroll, Type, Wait
from policies.hf_vlm import VLMParseError, parse_vlm_output

# The UI-TARS action space is read by the ui-tars package (the vlm extra; `make setup` installs it).
uitars = pytest.mark.skipif(importlib.util.find_spec("ui_tars") is None,
                            reason="needs the ui-tars package: pip install 'digital-worker[vlm]'")

# --- real strings --------------------------------------------------------------------------
# From bytedance/UI-TARS codes/tests/action_parser_test.py (the official parser's tests):
UITARS_POINT = "Thought: test\nAction: click(point='<point>200 300</point>')"
UITARS_BOX_TOKENS = "Thought: test\nAction: click(start_box='<|box_start|>(112,224)<|box_end|>')"
# The UI-TARS action space as prompted (httprunner/httprunner uixt/ai/prompt-ui-tars.go and the
# UI-TARS README prompt): start_box in <|box_start|>(x,y)<|box_end|> or [x1, y1, x2, y2] form.
UITARS_DRAG = ("Thought: Drag the slider to the right.\nAction: drag(start_box='<|box_start|>(410,520)<|box_end|>', "
               "end_box='<|box_start|>(640,520)<|box_end|>')")
UITARS_BBOX = "Thought: Open it.\nAction: left_double(start_box='[100, 200, 140, 240]')"
# The Qwen2.5-VL computer_use tool-call form (Hermes style, as in the Qwen2.5-VL cookbook and e.g.
# the public training notes found with the code search: {"action": "left_click", "coordinate": [500, 300]}).
QWEN25_TOOL = ('<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", '
               '"coordinate": [658, 364]}}\n</tool_call>')


@uitars
def test_uitars_official_examples_relative_1000():
    # The official parser maps 200/1000, 300/1000 on a 224x224 image (factor 1000).
    (a,) = parse_vlm_output(UITARS_POINT, (224, 224), "relative")
    assert isinstance(a, Click) and (a.x, a.y) == pytest.approx((0.2, 0.3))
    # Their test expects start_box [0.112*1000/1000...]: (112,224) -> (0.112, 0.224) with factor 1000.
    (b,) = parse_vlm_output(UITARS_BOX_TOKENS, (224, 224), "relative")
    assert (b.x, b.y) == pytest.approx((0.112, 0.224))


@uitars
def test_box_tokens_absolute_qwen25():
    # Qwen2.5-VL: absolute pixels of the resized input image (here 224x224): (112,224) -> (0.5, 1.0),
    # the same numbers the official UI-TARS test expects ("[0.5, 1.0, 0.5, 1.0]").
    (a,) = parse_vlm_output(UITARS_BOX_TOKENS, (224, 224), "absolute")
    assert (a.x, a.y) == pytest.approx((0.5, 1.0))


@uitars
@pytest.mark.parametrize("text,expect", [
    ("Action: click(start_box='(500,500)')", Click(0.5, 0.5)),
    ("Action: left_double(start_box='(100,900)')", Click(0.1, 0.9, count=2)),
    ("Action: right_single(start_box='(250,750)')", Click(0.25, 0.75, button="right")),
    (UITARS_DRAG, Drag(0.41, 0.52, 0.64, 0.52)),
    ("Action: hotkey(key='ctrl c')", Key("ctrl+c")),
    ("Action: type(content='hello world')", Type("hello world")),
    ("Action: scroll(start_box='(500,400)', direction='down')", Scroll(0.5, 0.4, dy=5)),
    ("Action: scroll(start_box='(500,400)', direction='up')", Scroll(0.5, 0.4, dy=-5)),
    ("Action: wait()", Wait(5.0)),
    ("Action: finished()", Done()),
    ("Action: finished(content='done')", Done()),
    (UITARS_BBOX, Click(0.12, 0.22, count=2)),
    ("Action: move_to(start_box='(100,200)')", Move(0.1, 0.2)),  # ui-tars' GUIActionType.MOVE_TO
])
def test_every_uitars_form(text, expect):
    assert parse_vlm_output(text, (1000, 1000), "relative") == [expect]


@uitars
def test_type_with_enter_submits():
    assert parse_vlm_output("Action: type(content='query\\n')") == [Type("query"), Key("enter")]


@uitars
def test_multiple_actions_and_thought_with_parentheses():
    text = ("Thought: The button (top right) must be clicked, then typed into.\n"
            "Action: click(start_box='(900,100)')\n\ntype(content='abc')")
    assert parse_vlm_output(text) == [Click(0.9, 0.1), Type("abc")]


def test_pyautogui_forms():
    # Qwen2-VL grounding-style answers as pyautogui code, absolute pixels of the model's image.
    assert parse_vlm_output("pyautogui.click(658, 364)", (1316, 728), "absolute") == [Click(0.5, 0.5)]
    assert parse_vlm_output("pyautogui.click(x=0.25, y=0.75)") == [Click(0.25, 0.75)]  # already normalised
    assert parse_vlm_output("pyautogui.doubleClick(500, 500)") == [Click(0.5, 0.5, count=2)]
    assert parse_vlm_output("pyautogui.rightClick(x=100, y=200)") == [Click(0.1, 0.2, button="right")]
    assert parse_vlm_output("pyautogui.moveTo(100, 200)") == [Move(0.1, 0.2)]
    assert parse_vlm_output("pyautogui.write(message='hi')") == [Type("hi")]
    assert parse_vlm_output("pyautogui.hotkey('ctrl', 'v')") == [Key("ctrl+v")]
    assert parse_vlm_output("pyautogui.press('enter')") == [Key("enter")]
    assert parse_vlm_output("pyautogui.scroll(-3)") == [Scroll(0.5, 0.5, dy=3)]
    assert parse_vlm_output("pyautogui.dragTo(500, 500)", cursor=(0.1, 0.1)) == [Drag(0.1, 0.1, 0.5, 0.5)]


def test_qwen25_tool_call_absolute():
    (a,) = parse_vlm_output(QWEN25_TOOL, (1316, 728), "absolute")
    assert (a.x, a.y) == pytest.approx((0.5, 0.5))
    t = '<tool_call>\n{"name": "computer_use", "arguments": {"action": "key", "keys": ["ctrl", "s"]}}\n</tool_call>'
    assert parse_vlm_output(t) == [Key("ctrl+s")]
    t = '<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}</tool_call>'
    assert parse_vlm_output(t) == [Done()]


@pytest.mark.parametrize("text,needle", [
    ("", "no text"),
    ("I think we should click the OK button.", "no action found"),
    ("<tool_call>{not json}</tool_call>", "not JSON"),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "fly"}}</tool_call>', "unknown computer_use"),
])
def test_malformed_outputs_are_clear_errors(text, needle):
    with pytest.raises(VLMParseError, match=needle):
        parse_vlm_output(text)


@uitars
@pytest.mark.parametrize("text,needle", [
    # ui-tars reads these without complaint; the adapter checks them
    ("Action: click(start_box='(500)')", "not a point"),
    ("Action: click(start_box='(5000,100)')", "off the image"),
    ("Action: scroll(start_box='(1,1)', direction='sideways')", "direction"),
    ("Action: teleport(start_box='(1,1)')", r"no action found.*teleport\(\) not in the UI-TARS action space"),
    ("Action: hotkey(key='ctrl+nosuchkey')", "invalid action"),
    # ui-tars raises on these: its message is kept
    ("Action: click(start_box=", r"no action found.*ui-tars: ValueError: Action can't parse"),
    ("Action: click(start_box='(a,b)')", "no action found.*could not convert"),
])
def test_malformed_uitars_outputs_are_clear_errors(text, needle, capsys):
    with pytest.raises(VLMParseError, match=needle):
        parse_vlm_output(text)
    assert capsys.readouterr().out == ""  # ui-tars' print()s go to the log, not to our stdout


@uitars
@pytest.mark.parametrize("text,expect", [
    # decoded with special tokens: the turn's end token follows the action
    ("Thought: Submit.\nAction: click(start_box='<|box_start|>(500,500)<|box_end|>')<|im_end|>", [Click(0.5, 0.5)]),
    # an unescaped quote in typed text (ui-tars' own type(content=...) handling)
    ("Thought: Reply.\nAction: type(content='It's done\\n')", [Type("It's done"), Key("enter")]),
    # "Action:" on its own line, and a bare call (no Action: line)
    ("Thought: Next.\nAction:\nclick(start_box='(100,200)')", [Click(0.1, 0.2)]),
    ("click(start_box='(100,200)')", [Click(0.1, 0.2)]),
    # <bbox> and float <point> (ui-tars reads integer <point> only)
    ("Action: click(start_box='<bbox>100 200 140 240</bbox>')", [Click(0.12, 0.22)]),
    ("Action: click(point='<point>200.5 300</point>')", [Click(0.2005, 0.3)]),
])
def test_uitars_outputs_the_package_needs_help_with(text, expect):
    assert parse_vlm_output(text) == expect


def test_without_ui_tars_a_clear_error_and_the_other_forms_still_parse(monkeypatch):
    import policies.hf_vlm as hv

    monkeypatch.setitem(sys.modules, "ui_tars", None)  # as if not installed
    monkeypatch.setattr(hv, "_ui_tars_parser", None)
    with pytest.raises(hv.VLMDependencyError, match=r"digital-worker\[vlm\]"):
        parse_vlm_output("Action: click(start_box='(500,500)')")
    with pytest.raises(hv.VLMDependencyError, match="ui-tars"):  # before any model is built
        hv.load_hf_vlm_policy("hf-vlm:qwen2-vl-tiny")
    assert parse_vlm_output("pyautogui.click(500, 500)") == [Click(0.5, 0.5)]
    assert parse_vlm_output(QWEN25_TOOL, (1316, 728), "absolute") == [Click(0.5, 0.5)]
    with pytest.raises(VLMParseError, match="no action found"):
        parse_vlm_output("I think we should click the OK button.")


def test_importing_the_adapter_does_not_import_ui_tars():
    code = "import sys, policies.hf_vlm, policies.registry, agent.conductor.models; print('ui_tars' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the policy end to end ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("transformers")
    from policies.hf_vlm import build_random

    return build_random("qwen2-vl-tiny")


def _obs(w=640, h=400):
    from capture import Frame, Screen
    from policies.base import Observation

    px = np.random.default_rng(0).integers(0, 255, (h, w, 4), dtype=np.uint8)
    return Observation(Frame(px, 0.0, 0, Screen(w, h)), "click OK")


def test_policy_end_to_end_random_tiny_qwen2vl(tiny):
    from policies.hf_vlm import HFVLMPolicy

    model, proc = tiny
    pol = HFVLMPolicy(model, proc, max_new_tokens=6, max_pixels=64 * 28 * 28, on_parse_error="skip")
    pol.reset("click OK")
    actions = pol.act(_obs())
    # random weights: either valid Actions or no action with a clear parse error naming the output
    assert isinstance(actions, list)
    if actions:
        assert all(0 <= a.x <= 1 for a in actions if hasattr(a, "x"))
    else:
        assert "model output" in pol.last_error or "no text" in pol.last_error
    assert pol.timings["generate"] > 0 and pol.last_image_size[0] % 28 == 0
    assert pol.timings["input_tokens"] > 64 // 4  # the image's tokens are in the prompt


@uitars
def test_policy_raise_mode_and_parse_of_a_scripted_output(tiny, monkeypatch):
    from policies.hf_vlm import HFVLMPolicy

    model, proc = tiny
    pol = HFVLMPolicy(model, proc, max_new_tokens=2, max_pixels=64 * 28 * 28)
    tok = proc.tokenizer
    real = UITARS_BOX_TOKENS
    ids = tok(real, return_tensors="pt")["input_ids"][0]

    def fake_generate(**kw):  # the model "answers" a real UI-TARS output: exercises decode + parse
        import torch

        return torch.cat([kw["input_ids"][0], ids])[None]

    monkeypatch.setattr(model, "generate", fake_generate)
    (a,) = pol.act(_obs())
    assert isinstance(a, Click) and (a.x, a.y) == pytest.approx((0.112, 0.224))
    monkeypatch.setattr(model, "generate", lambda **kw: kw["input_ids"])  # no new tokens
    with pytest.raises(VLMParseError, match="no text"):
        pol.act(_obs())


def test_registry_spec():
    from policies.base import PolicyError
    from policies.registry import load_policy

    with pytest.raises(PolicyError, match="nothing is downloaded"):
        load_policy("hf-vlm:/nonexistent/folder")
    with pytest.raises(PolicyError, match="hf-vlm needs"):
        load_policy("hf-vlm:")
