"""Demos name the word that names each expert target (``EXPERT_TARGET``), and a reading model's
pointer learns to look for that word of the instruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.desktops.virtual import VirtualDesktop
from agent.desktops.virtual.tasks import CLASSIC_TASKS, task_names
from agent.sessions.demos import demo_specs, record_demo
from agent.sessions.format import EXPERT_TARGET, open_session
from agent.training.dataset import session_samples
from policies.pixel import PixelConfig, PixelModel, encode_text
from policies.pixel.codec import LABEL_FIELDS
from policies.pixel.words import word_position, word_templates
from tests.test_pixel_match import READER, _blank_step

NAMED = {"click-button", "click-checkboxes", "enter-text", "click-menu", "double-click-icon"}


@pytest.mark.parametrize("task", task_names())
def test_the_expert_target_is_a_word_of_the_instruction_at_every_step(task):
    for seed in range(6):
        desk = VirtualDesktop(task, seed=seed, size=(800, 600))
        t = desk.oracle
        named = []
        for _ in range(20):  # fill-form: click, ctrl+a, type for each of up to 4 fields, then Submit
            if t.finished:
                break
            word = t.expert_target()
            if word is not None:
                assert word_position(t.instruction.encode(), word) >= 0, (word, t.instruction)
                named.append(word)
            for a in t.expert_actions():
                desk.apply(a)
        assert t.success, (task, seed)
        desk.close()
        if task in NAMED - {"enter-text"}:
            assert named
        if task in CLASSIC_TASKS and task not in NAMED:
            assert not named


def test_checkboxes_name_each_box_still_to_tick_then_submit():
    desk = VirtualDesktop("click-checkboxes", seed=3, size=(800, 600))
    t = desk.oracle
    seen = []
    while not t.finished:
        seen.append(t.expert_target())
        for a in t.expert_actions():
            desk.apply(a)
    # after success the expert waits and says done: steps no word names
    assert seen[-2:] == [None, None]
    seen = seen[:-2]
    assert seen[:-1] == [b.label for b in t.boxes if b in t.targets] and seen[-1] == "Submit"


def test_word_position_finds_the_quoted_whole_word():
    raw = b'Type "art" into the "Street" field; then Start.'
    assert raw[word_position(raw, "Street"):].startswith(b"Street")
    assert word_position(raw, "Start") == raw.index(b"Start.")
    assert word_position(raw, "art") == raw.index(b'"art') + 1  # quoted, not inside "Start"
    assert word_position(raw, "tart") == -1 and word_position(raw, None) == -1
    assert word_position(b"re-start or start", "start") == 12  # "-" stays inside a word, as in a template
    # whole words at the end too (click-checkboxes, seed 186, named "Bluetooth" for "Blue")
    ticks = b'Select "Bluetooth", "Blue" and "Phone", then click Submit.'
    assert word_position(ticks, "Blue") == ticks.index(b'"Blue"') + 1
    assert word_position(b"Open Soundtrack, then Sound.", "Sound") == 22
    assert word_position(b"Open Soundtrack", "Sound") == -1
    _, starts = word_templates(torch.from_numpy(encode_text(raw.decode(), 96)[0])[None])
    assert all(bool(starts[0, word_position(raw, w)]) for w in ("Street", "Start", "art", "Type"))


def test_demos_record_the_target_and_training_labels_its_position(tmp_path):
    (spec,) = demo_specs(["click-menu"], 1, [(640, 480, 1.0)], 5, human_like=False)
    path = record_demo(spec, str(tmp_path))["path"]
    s = open_session(path)
    words = [e.raw["word"] for e in s.events if e.raw.get("event") == EXPERT_TARGET]
    menu = s.instruction.split('"')[3]
    item = s.instruction.split('"')[1]
    assert words == [menu, item, None, None]  # then a wait on the finished screen, and done
    assert [e.action.type for e in s.actions()][-2:] == ["wait", "done"]
    cfg = PixelConfig(hidden_size=64, num_layers=2, num_heads=2, stem_channels=8, max_glimpses=8)
    lab = session_samples(tmp_path / path.split("/")[-1], cfg)["labels"][:, LABEL_FIELDS.index("word")]
    raw = s.instruction.encode()
    assert [raw[i:].split(b'"')[0].decode() for i in lab if i >= 0] == [menu, item]


def test_a_step_that_points_nowhere_gets_no_word_label(tmp_path):
    # a human-like expert first pauses to read (a Wait): its target is named, but no pointer goes there
    (spec,) = demo_specs(["click-button"], 1, [(640, 480, 1.0)], 7, human_like=True)
    path = record_demo(spec, str(tmp_path))["path"]
    s = open_session(path)
    assert sum(e.raw.get("event") == EXPERT_TARGET for e in s.events) >= 2
    cfg = PixelConfig(hidden_size=64, num_layers=2, num_heads=2, stem_channels=8, max_glimpses=8)
    labels = session_samples(tmp_path / path.split("/")[-1], cfg)["labels"]
    ptr0, word = labels[:, LABEL_FIELDS.index("ptr0")], labels[:, LABEL_FIELDS.index("word")]
    assert (ptr0 < 0).any() and (ptr0 >= 0).any()
    assert (word[ptr0 < 0] == -1).all()
    label = s.instruction.split('"')[1]
    assert {s.instruction.encode()[i:].split(b'"')[0].decode() for i in word[ptr0 >= 0]} == {label}


def test_a_reading_model_learns_to_look_for_the_named_word():
    torch.manual_seed(0)
    m = PixelModel(PixelConfig(hidden_size=64, num_layers=2, num_heads=2, stem_channels=8, max_glimpses=8,
                               grounding={**READER, "reach": 2}))
    text = 'Type "x" into the "Street" field.'
    with torch.no_grad():  # the instruction is encoded once, as a policy does; its layers are not trained here
        cache = m.encode_text(torch.from_numpy(encode_text(text, 96)[0])[None])
    args = _blank_step(m, cache)
    args["match"] = torch.rand(1, m.config.max_glimpses, 4, 96)
    labels = torch.full((1, len(LABEL_FIELDS)), -1)
    labels[0, LABEL_FIELDS.index("ptr0")] = 3
    pos = text.index("Street")
    labels[0, LABEL_FIELDS.index("word")] = pos
    offsets = torch.zeros(1, 2, 2)
    m.eval()
    assert m(**args).aux is None  # the step has no training outputs
    m.train()
    params = [p for n, p in m.named_parameters() if n.startswith("grounding.t")]  # tq, tk, temp
    opt = torch.optim.SGD(params, lr=0.5)
    share = []
    for _ in range(20):
        out = m(**args, labels=labels, target_offsets=offsets)
        share.append(float(out.aux["word_logits"][0, 0].detach().softmax(-1)[pos]))
        assert "word" in out.loss_parts
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert share[-1] > 0.9 > share[0]
    labels[0, LABEL_FIELDS.index("word")] = -1  # no demo named a target: no word loss
    assert "word" not in m(**args, labels=labels, target_offsets=offsets).loss_parts
    assert np.isfinite(share).all()
