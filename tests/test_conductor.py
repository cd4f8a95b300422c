"""Workflows and conductors (#43): checks between steps, retries and a clear stop, the
OpenAI-compatible conductor's protocol path against a local server, conductor events in sessions."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.conductor.base import Finish, Goal, Instruction, WorkflowConductor, parse_reply
from agent.conductor.run import run_row, run_rows, summarise_rows
from agent.conductor.scene import SceneDesktop
from agent.conductor.workflow import WorkflowError, load_rows, load_workflow, parse_workflow
from agent.loop import Agent
from policies import load_policy

ROOT = Path(__file__).resolve().parent.parent
FORM = ROOT / "examples" / "workflows" / "form.yaml"
ROWS = ROOT / "examples" / "workflows" / "rows.csv"
SIZE = (640, 480)


def run_dw(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def form(timeout: float = 10.0, retries: int = 2, keep: bool = False, city_retries: int | None = None):
    wf = load_workflow(FORM)
    steps = [{"name": s.name, "do": s.instruction, "check": [c.to_json() for c in s.checks]} for s in wf.steps]
    if city_retries is not None:
        steps[1]["retries"] = city_retries
    data = {"name": wf.name, "desktop": wf.desktop,
            "defaults": {"timeout": timeout, "retries": retries, "keep": keep}, "steps": steps}
    return parse_workflow(data, str(FORM))


def row(i: int = 0) -> dict:
    return load_rows(ROWS)[i]


def scene(seed: int = 1) -> SceneDesktop:
    return SceneDesktop(load_workflow(FORM).desktop, seed=seed, size=SIZE)


# -- the format ------------------------------------------------------------------------------------

def test_example_workflow_and_rows():
    wf = load_workflow(FORM)
    assert len(wf.steps) == 5 and wf.variables() == ["name", "city", "email", "company"]
    rows = load_rows(ROWS, wf)
    assert len(rows) == 20
    filled = wf.fill(rows[0])
    assert filled.steps[0].instruction == f'Type "{rows[0]["name"]}" into the "Name" field and press Enter.'
    assert filled.steps[0].checks[0].equals == rows[0]["name"]
    assert filled.steps[4].checks[0].value == f"Saved {rows[0]['name']}"


@pytest.mark.parametrize("data, words", [
    ({"steps": []}, "non-empty list"),
    ({"steps": [{"do": "x", "bogus": 1}]}, "unknown key 'bogus'"),
    ({"steps": [{"do": "x", "check": {"text": "a", "window": "b"}}]}, "exactly one"),
    ({"steps": [{"do": "x", "timeout": -1}]}, "timeout"),
    ({"steps": [{"do": "a lone { brace"}]}, "lone"),
    ({"steps": [{"do": "x", "retries": 1.5}]}, "retries"),
])
def test_workflow_errors_name_the_step(data, words):
    with pytest.raises(WorkflowError, match=words):
        parse_workflow(data, "w.yaml")


def test_rows_must_fill_every_variable(tmp_path):
    bad = tmp_path / "rows.csv"
    bad.write_text("name,city\nada,london\n")
    with pytest.raises(WorkflowError, match="no column 'email'"):
        load_rows(bad, load_workflow(FORM))
    rc, out, err = run_dw(["eval", "--workflow", str(FORM), "--policy", "scripted", "--json"])
    assert rc == 2 and "--rows" in err and "Traceback" not in err


# -- checks between steps ----------------------------------------------------------------------------

def test_scripted_rows_succeed_and_report_per_row_and_step():
    wf = load_workflow(FORM)
    rows = load_rows(ROWS, wf)[:2]
    results = run_rows(wf, rows, lambda i: SceneDesktop(wf.desktop, seed=100 + i, size=SIZE),
                       load_policy("scripted"), WorkflowConductor())
    rep = summarise_rows(wf, results, policy="scripted", conductor="workflow")
    assert rep["rows"] == 2 and rep["rows_succeeded"] == 2
    assert all(v["confirmed"] == 2 for v in rep["steps"].values())
    assert [s["outcome"] for s in results[0]["steps"]] == ["confirmed"] * 5


def test_a_failing_check_is_retried_then_the_run_stops_with_its_reason(tmp_path):
    wf = form(timeout=1.5, retries=2).fill(row())
    desk = scene()
    desk.remove_field("Email")  # the injected fault: step 3's target field is gone
    r = run_row(wf, desk, load_policy("scripted"), WorkflowConductor(), record=tmp_path / "s")
    desk.close()
    assert r["success"] is False
    outcomes = [(s["step"], s["outcome"], s["attempts"]) for s in r["steps"]]
    assert outcomes == [(1, "confirmed", 1), (2, "confirmed", 1), (3, "failed", 3), (4, "not-attempted", 0),
                        (5, "not-attempted", 0)]
    assert r["reason"].startswith("step 3 (email) not confirmed after 3 attempts")
    assert "no field 'Email' on screen" in r["reason"]
    assert r["end_reason"] == f"workflow-failed: {r['reason']}"
    # the session says the same: three attempts at step 3, nothing after it
    from agent.sessions.format import open_session

    evs = [e.raw for e in open_session(tmp_path / "s").events if e.source == "conductor"]
    starts = [(e["step"], e["attempt"]) for e in evs if e["event"] == "step_start"]
    assert starts == [(1, 1), (2, 1), (3, 1), (3, 2), (3, 3)]
    assert evs[-1]["event"] == "workflow_end" and evs[-1]["success"] is False
    rc, out, _ = run_dw(["info", str(tmp_path / "s"), "--json"])
    info = json.loads(out)
    assert rc == 0 and info["conductor"]["success"] is False
    assert [s["outcome"] for s in info["conductor"]["steps"]] == ["confirmed", "confirmed", "failed", "failed", "failed"]


class _Astray:
    """The scripted policy, except that its first attempt at the Email step types the address into
    the City field (a click on the wrong row), then says done."""

    name = "astray"

    def __init__(self, desk):
        self.inner, self.desk, self.strayed = load_policy("scripted"), desk, False

    def reset(self, instruction):
        self.inner.reset(instruction)

    def act(self, obs):
        from policies.actions import Done, Type

        if '"Email"' in obs.instruction and not self.strayed:
            self.strayed = True
            return [self.click("City"), Type(row()["email"]), Done()]
        return self.inner.act(obs)

    def click(self, name):
        from policies.actions import Click

        r = next(f for f in self.desk._task.fields if f.name == name).rect
        sc = self.desk.screen
        return Click(r.center[0] * sc.scale / sc.width, r.center[1] * sc.scale / sc.height)


def keep_form(retries: int, city_retries: int | None = None):
    """The example form with every step kept (as the example keeps them)."""
    assert all(s.keep for s in load_workflow(FORM).steps)
    return form(timeout=5, retries=retries, keep=True, city_retries=city_retries).fill(row())


def test_a_kept_step_a_later_step_broke_runs_again(tmp_path):
    desk = scene()
    r = run_row(keep_form(retries=2), desk, _Astray(desk), WorkflowConductor(), record=tmp_path / "s")
    fields = {f.name: f.text for f in desk._task.fields}
    desk.close()
    assert r["success"] is True, r["reason"]
    assert fields["City"] == row()["city"] and fields["Email"] == row()["email"]
    city = r["steps"][1]
    assert (city["outcome"], city["attempts"], city["broken"]) == ("confirmed", 2, 1)
    assert r["steps"][2]["attempts"] == 2 and "broken" not in r["steps"][2]
    from agent.sessions.format import open_session

    evs = [e.raw for e in open_session(tmp_path / "s").events if e.source == "conductor"]
    broken = [e for e in evs if e["event"] == "step_broken"]
    assert len(broken) == 1 and broken[0]["step"] == 2 and "step 3 (email) broke it" in broken[0]["detail"]
    starts = [(e["step"], e["attempt"]) for e in evs if e["event"] == "step_start"]
    assert starts == [(1, 1), (2, 1), (3, 1), (3, 2), (2, 2), (4, 1), (5, 1)]
    rc, out, _ = run_dw(["info", str(tmp_path / "s"), "--json"])
    assert rc == 0 and "broken" in [s["outcome"] for s in json.loads(out)["conductor"]["steps"]]


def test_a_step_run_again_that_breaks_a_later_one_sends_the_run_back_to_it():
    class Clumsy(_Astray):  # and when it mends City, it types into Email too
        def act(self, obs):
            from policies.actions import Done, Key, Type

            if '"City"' in obs.instruction and self.strayed and not getattr(self, "clumsy", False):
                self.clumsy = True
                return [self.click("City"), Key("ctrl+a"), Type(row()["city"]), self.click("Email"), Type("x"), Done()]
            return super().act(obs)

    desk = scene()
    r = run_row(keep_form(retries=2), desk, Clumsy(desk), WorkflowConductor(), record=None)
    fields = {f.name: f.text for f in desk._task.fields}
    desk.close()
    assert r["success"] is True, r["reason"]
    assert fields["Email"] == row()["email"] and fields["City"] == row()["city"]
    assert [(s["attempts"], s.get("broken")) for s in r["steps"][1:3]] == [(2, 1), (3, 1)]


def test_a_broken_step_without_attempts_left_stops_the_run():
    desk = scene()
    r = run_row(keep_form(retries=0), desk, _Astray(desk), WorkflowConductor())
    desk.close()
    assert r["success"] is False
    assert r["reason"].startswith("step 3 (email) not confirmed after 1 attempt")  # no retry for Email itself
    desk = scene()
    r = run_row(keep_form(retries=1, city_retries=0), desk, _Astray(desk), WorkflowConductor())
    desk.close()
    assert r["success"] is False and r["reason"].startswith("step 2 (city) no longer holds and has no attempt left")
    assert "step 3 (email) broke it" in r["reason"] and r["steps"][1]["outcome"] == "broken"


@pytest.mark.parametrize("data, words", [
    ({"steps": [{"do": "x", "keep": True}]}, "'keep' needs a check"),
    ({"steps": [{"do": "x", "check": "a", "keep": "yes"}]}, "keep must be true or false"),
    ({"defaults": {"keep": 1}, "steps": ["x"]}, "keep must be true or false"),
])
def test_keep_errors(data, words):
    with pytest.raises(WorkflowError, match=words):
        parse_workflow(data, "w.yaml")


def test_done_with_a_failing_check_is_a_failed_attempt():
    class Liar:  # says done at once, touches nothing
        name = "liar"
        calls: list = []

        def reset(self, instruction):
            self.calls.append("reset")

        def retry(self, attempt):  # told when an attempt repeats a failed one
            self.calls.append(attempt)

        def act(self, obs):
            from policies.actions import Done

            return [Done()]

    wf = form(timeout=5, retries=2).fill(row())
    desk = scene()
    r = run_row(wf, desk, Liar(), WorkflowConductor())
    assert r["steps"][0]["attempts"] == 3 and "the policy said done but the check failed" in r["reason"]
    assert [c for c in Liar.calls if c != "reset"] == [2, 3]  # attempts 2 and 3, each after its reset
    assert Liar.calls[-2:] == ["reset", 3]
    assert r["virtual_seconds"] < 2  # no waiting for the timeout


# -- the conductor runs off the loop's thread ----------------------------------------------------------

def test_a_slow_conductor_does_not_stop_capture_or_the_stop_switch():
    class Slow(WorkflowConductor):
        threaded = True
        name = "slow"

        def next_step(self, goal, frames, history):
            time.sleep(0.4)
            return super().next_step(goal, frames, history)

    wf = form().fill(row())
    from agent.conductor.director import Director

    desk = scene()
    events = []
    d = Director(Slow(), Goal("g", wf), on_event=lambda t, **f: events.append((desk._index, f)))
    agent = Agent(desk, load_policy("scripted"), instruction="", director=d, max_seconds=60)
    threading.Timer(1.0, agent.stop, args=("test stop",)).start()
    t0 = time.monotonic()
    res = agent.run()
    assert time.monotonic() - t0 < 3.0
    first = next(i for i, f in events if f["event"] == "step_start")
    assert first >= 3  # frames kept coming while the first decision was pending
    assert res.reason == "test stop" and res.success is False
    assert events[-1][1]["event"] == "workflow_end" and "stopped" in events[-1][1]["reason"]


# -- the OpenAI-compatible conductor: the protocol path against a local server ---------------------------

class _Chat(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = type(self).replies.pop(0) if type(self).replies else "DONE"
        out = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def chat_server():
    pytest.importorskip("openai")
    _Chat.replies, _Chat.requests = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_conductor_drives_the_workflow(chat_server, tmp_path, monkeypatch):
    from agent.conductor.models import make_conductor

    monkeypatch.setenv("DW_CONDUCTOR_API_KEY", "sk-test")
    # out of order first (refused: step 1 is not confirmed), then a reasoning line, then the steps
    _Chat.replies = ["STEP 3", "Thought: the form is empty.\nSTEP 1", "STEP 2", '{"step": 3}', "step 4", "STEP 5",
                     "DONE"]
    conductor = make_conductor(f"openai:{chat_server}:test-model:7b")
    assert conductor.model == "test-model:7b" and conductor.base_url == chat_server
    wf = form().fill(row())
    desk = scene()
    r = run_row(wf, desk, load_policy("scripted"), conductor, record=tmp_path / "s")
    assert r["success"] is True, r["reason"]
    assert [s["outcome"] for s in r["steps"]] == ["confirmed"] * 5
    reqs = _Chat.requests
    assert len(reqs) == 7 and reqs[0]["path"] == "/v1/chat/completions" and reqs[0]["auth"] == "Bearer sk-test"
    body = reqs[0]["body"]
    assert body["model"] == "test-model:7b" and body["messages"][0]["role"] == "system"
    parts = body["messages"][1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "step 1 is not confirmed" not in parts[0]["text"]
    assert "refused" in reqs[1]["body"]["messages"][1]["content"][0]["text"]  # the model hears why
    from agent.sessions.format import open_session

    evs = [e.raw for e in open_session(tmp_path / "s").events if e.source == "conductor"]
    decisions = [e for e in evs if e["event"] == "decision"]
    assert decisions[0]["reply"] == "STEP 3" and decisions[0]["conductor"] == "openai:test-model:7b"
    assert any(e["event"] == "refused" for e in evs)


def test_openai_conductor_unreadable_replies_stop_the_run(chat_server):
    from agent.conductor.models import make_conductor

    _Chat.replies = ["I think we should look around.", "hmm", "???"]
    wf = form().fill(row())
    r = run_row(wf, scene(), load_policy("scripted"), make_conductor(f"openai:{chat_server}:m"))
    assert r["success"] is False and r["reason"].startswith("conductor-error:") and "holds no decision" in r["reason"]


def test_parse_reply_forms():
    wf = form().fill(row())
    g = Goal("g", wf)
    assert parse_reply("STEP 2", g) == Instruction(wf.steps[1].instruction, 2)
    assert parse_reply("DO: close the popup", g) == Instruction("close the popup")
    assert parse_reply("Done.", g) == Finish(True, "the conductor says the goal is achieved")
    assert isinstance(parse_reply("FAIL: no form", g), Finish)
    from agent.conductor.base import ConductorError

    with pytest.raises(ConductorError, match="steps are 1-5"):
        parse_reply("STEP 9", g)


def test_openai_spec_parsing():
    from agent.conductor.models import parse_openai_spec
    from agent.errors import UserError

    assert parse_openai_spec("openai:http://localhost:11434/v1:llava:13b") == ("http://localhost:11434/v1", "llava:13b")
    assert parse_openai_spec("openai:https://api.example.com/v1:gpt-x") == ("https://api.example.com/v1", "gpt-x")
    assert parse_openai_spec("openai:http://localhost:8000:m") == ("http://localhost:8000", "m")
    with pytest.raises(UserError):
        parse_openai_spec("openai:localhost")


# -- sessions: dw run records conductor events; dw info and dw replay read them ----------------------------

def test_dw_run_workflow_session_info_and_replay(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS.read_text().splitlines()[0] + "\n" + ROWS.read_text().splitlines()[1] + "\n")
    rc, out, err = run_dw(["run", "--workflow", str(FORM), "--rows", str(rows), "--desktop", "virtual",
                           "--policy", "scripted", "--record", str(tmp_path / "rec"), "--json"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["rows"] == 1 and rep["rows_succeeded"] == 1
    session = tmp_path / "rec" / "row-001"
    rc, out, _ = run_dw(["info", str(session), "--json"])
    info = json.loads(out)
    assert info["events_by_source"]["conductor"] >= 11
    assert [s["outcome"] for s in info["conductor"]["steps"]] == ["confirmed"] * 5
    assert info["conductor"]["steps"][0]["instruction"].startswith('Type "ada" into the "Name" field')
    rc, out, _ = run_dw(["info", str(session)])
    assert rc == 0 and "step 5 #1" in out and "confirmed" in out
    rc, out, _ = run_dw(["replay", str(session), "--json"])
    rp = json.loads(out)
    assert rc == 0 and rp["instructions_followed"] == 5 and rp["agreement"] == 1.0 and not rp["policy_errors"]


def test_dw_eval_workflow_json(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(ROWS.read_text().splitlines()[:4]) + "\n")
    rc, out, err = run_dw(["eval", "--workflow", str(FORM), "--rows", str(rows), "--policy", "scripted",
                           "--sizes", "640x480", "--json"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["rows"] == 3 and rep["rows_succeeded"] == 3 and rep["size"] == "640x480@1"
    assert set(rep["steps"]) == {"1", "2", "3", "4", "5"} and len(rep["results"]) == 3
    assert rep["results"][0]["values"]["name"] == "ada"


def test_dw_run_live_checks_it_cannot_read_are_refused_up_front():
    from agent.conductor.checks import unsupported

    class Live:
        oracle = None

        def info(self):
            return {"kind": "live"}

    line = unsupported(load_workflow(FORM), Live())
    assert line and "step 1 (name) checks field 'Name'" in line


@pytest.mark.slow
def test_vlm_conductor_plumbing():
    """A random-weights Qwen2-VL through hf-vlm: its replies are noise, reported as conductor errors."""
    from agent.conductor.models import make_conductor

    c = make_conductor("vlm:qwen2-vl-tiny")
    wf = form().fill(row())
    r = run_row(wf, scene(), load_policy("scripted"), c)
    assert r["success"] is False and r["reason"].startswith("conductor-error")
