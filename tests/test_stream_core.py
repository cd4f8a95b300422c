"""The stream protocol's sans-I/O core (agent/stream/connection.py): no sockets, no event loop, a fake clock."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from agent.desktops import ActionRefused, DesktopError
from agent.stream import connection as C
from agent.stream import protocol as P
from agent.stream.http import Refusal
from agent.stream.steering import PolicyControl
from policies.actions import Click, Key, MouseDown, MouseUp, Type, Wait

STATE = {"t": 1.0, "cursor": [0.5, 0.5], "finished": False, "success": None, "instruction": "Click OK.",
         "expert": False, "frame": 3}


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_hub(video: bool = True, **limits) -> tuple[C.Hub, Clock]:
    clock = Clock()
    hub = C.Hub(C.Limits(**limits), fps=10.0, screen={"width": 64, "height": 48, "left": 0, "top": 0, "scale": 1.0},
                info=lambda: {"kind": "fake"}, video=(lambda: {"codec": "x"}) if video else (lambda: None),
                clock=clock)
    if not video:
        hub.video_error = "no encoder"
    hub.state = dict(STATE)
    return hub, clock


def connect(hub: C.Hub, role: str = "controller", fmt: str = "none", address: str = "1.2.3.4") -> C.Connection:
    conn, effects = hub.connect(role, fmt, address)
    assert any(isinstance(e, C.WakeProducer) for e in effects)
    hello = take(conn)
    assert [m["type"] for m in hello] == ["hello"]
    return conn


def take(conn: C.Connection) -> list[dict]:
    """The replies queued for ``conn`` (drained, as the driver's sender does)."""
    out = []
    while conn.control:
        out.append(json.loads(conn.next_outgoing()))
    return out


def send(conn: C.Connection, msg: dict | str | bytes) -> list:
    return conn.receive(json.dumps(msg) if isinstance(msg, dict) else msg)


def test_hello_announces_role_limits_state_and_policy():
    hub, _ = make_hub(action_rate=5, max_wait=2.0)
    hub.policy = PolicyControl("scripted")
    conn, _ = hub.connect("viewer", "jpeg", "a")
    (hello,) = take(conn)
    assert hello["type"] == "hello" and hello["protocol"] == P.PROTOCOL_VERSION
    assert hello["role"] == "viewer" and hello["client"] == conn.id and hello["format"] == "jpeg"
    assert hello["limits"]["action_rate"] == 5.0 and hello["limits"]["max_wait_s"] == 2.0
    assert hello["desktop"]["info"] == {"kind": "fake"} and hello["desktop"]["instruction"] == "Click OK."
    assert hello["policy"]["name"] == "scripted" and hello["video"] == {"codec": "x"}
    assert hello["header"] == {"size": 32, "magic": "DW", "version": 1}


def test_validation_errors_keep_the_connection_open():
    hub, _ = make_hub()
    conn = connect(hub)
    bad = ["not json", "[1, 2]", '{"type": "nope"}', '{"type": "state", "id": true}', "[" * 100_000]
    for text in bad:
        assert send(conn, text) == []
    assert send(conn, b"\x00binary") == []
    replies = take(conn)
    assert [r["type"] for r in replies] == ["error"] * 6
    assert [r["field"] for r in replies] == ["message", "message", "type", "id", "message", "message"]
    assert not conn.closing and conn.errors == 6 and hub.counters["errors"] == 6
    send(conn, {"type": "state", "id": 9})
    assert take(conn) == [{"type": "state", "id": 9, **STATE}]


def test_a_400_digit_coordinate_is_an_error_reply():
    hub, _ = make_hub()
    conn = connect(hub)
    text = '{"type": "action", "id": 1, "action": {"type": "click", "x": 1' + "0" * 400 + ', "y": 0.5}}'
    assert send(conn, text) == []
    (err,) = take(conn)
    assert err["type"] == "error" and err["id"] == 1 and err["field"].startswith("action")
    assert not conn.closing


def test_actions_become_apply_effects_and_acks():
    hub, _ = make_hub()
    ctl, viewer = connect(hub), connect(hub, "viewer")
    (eff,) = send(ctl, {"type": "action", "id": "a", "action": {"type": "type", "text": "secret"}})
    assert isinstance(eff, C.ApplyAction) and eff.conn is ctl and eff.id == "a" and eff.action == Type("secret")
    state = {**STATE, "t": 2.0, "instruction": "Now type."}
    hub.action_done(ctl, "a", eff.action, state)
    ack, applied, st = take(ctl)
    assert ack == {"type": "ack", "id": "a", **state}
    assert applied["type"] == "applied" and applied["action"]["text"] == "secret" and applied["client"] == ctl.id
    assert st["type"] == "state" and st["instruction"] == "Now type."
    v_applied, v_state = take(viewer)
    assert v_applied["action"]["text"] == "<6 characters>" and v_state["type"] == "state"
    hub.broadcast_applied(ctl.id, Key("ctrl+c"), state)
    assert take(viewer)[0]["action"]["keys"] == "<redacted>" and take(ctl)[0]["action"]["keys"] == "ctrl+c"
    assert ctl.actions == 1 and hub.counters["actions"] == 1


def test_desktop_outcomes_become_error_replies():
    hub, _ = make_hub()
    conn = connect(hub)
    assert hub.action_failed(conn, 1, ActionRefused("no")) == []
    assert hub.action_failed(conn, 2, DesktopError("gone")) == []
    effects = hub.action_failed(conn, 3, RuntimeError("bug"))
    assert any(isinstance(e, C.ReleaseInput) for e in effects)  # a desktop bug lets go of what was held
    a, b, c = take(conn)
    assert (a["field"], a["message"]) == ("action", "refused: no")
    assert (b["field"], c["field"]) == ("desktop", "desktop") and "RuntimeError" in c["message"]
    (eff,) = send(conn, {"type": "expert", "id": 4})
    assert isinstance(eff, C.AskExpert) and eff.id == 4
    hub.expert_failed(conn, 4, ActionRefused("no expert"))
    hub.expert_done(conn, 5, [{"type": "done"}])
    assert [(r["type"], r.get("field")) for r in take(conn)] == [("error", "expert"), ("expert", None)]


def test_viewers_cannot_act_steer_or_ask_the_expert():
    hub, _ = make_hub()
    hub.policy = PolicyControl("random")
    viewer = connect(hub, "viewer")
    for msg in ({"type": "action", "action": {"type": "done"}}, {"type": "expert"}, {"type": "policy", "paused": True}):
        assert send(viewer, {**msg, "id": 1}) == []
    assert [r["field"] for r in take(viewer)] == ["role"] * 3
    assert not hub.policy.paused
    send(viewer, {"type": "stats", "id": 2})
    (stats,) = take(viewer)
    assert stats["you"]["role"] == "viewer" and stats["counters"]["errors"] == 3


def test_rate_limit_and_wait_cap():
    hub, clock = make_hub(action_rate=3, max_wait=2.0)
    conn = connect(hub)
    click = {"type": "action", "action": {"type": "click", "x": 0.5, "y": 0.5}}
    kinds = [type(e).__name__ for i in range(5) for e in send(conn, {**click, "id": i})]
    assert kinds == ["ApplyAction"] * 3 + ["ReleaseInput"] * 2
    errors = take(conn)
    assert [e["id"] for e in errors] == [3, 4] and all("rate limit" in e["message"] for e in errors)
    assert hub.counters["rate_limited"] == 2
    (eff,) = send(conn, {"type": "action", "id": "w", "action": {"type": "wait", "seconds": 1.0}})
    assert isinstance(eff, C.ApplyAction) and eff.action == Wait(1.0)  # a wait is not counted
    assert send(conn, {"type": "action", "id": "w2", "action": {"type": "wait", "seconds": 2.5}}) == []
    (err,) = take(conn)
    assert err["field"] == "action.seconds" and "cap" in err["message"]
    clock.t += 1.01  # a new one-second window
    assert isinstance(send(conn, {**click, "id": 9})[0], C.ApplyAction)


def test_reply_queue_is_bounded_in_bytes():
    hub, _ = make_hub(control_queue_bytes=1000)
    conn, other = connect(hub), connect(hub)
    for _ in range(50):
        hub.broadcast({"type": "state", **STATE})  # broadcasts are dropped for a full queue
    assert conn.control_bytes <= 1000 and conn.dropped_control > 0 and not conn.closing
    effects = send(conn, {"type": "state", "id": 1})  # a reply it asked for closes it
    assert [type(e) for e in effects] == [C.Audit, C.Close]
    assert (effects[1].code, effects[1].reason) == (1008, "not reading replies")
    assert conn.closing and hub.counters["clients_closed_stuck"] == 1
    assert send(conn, {"type": "state", "id": 2}) == []  # nothing more is read from a closing connection
    assert take(other) and not other.closing


def test_frame_queue_is_bounded_by_count_and_bytes():
    hub, _ = make_hub(frame_queue=3, frame_queue_bytes=2500)
    video, jpeg = connect(hub, fmt="video"), connect(hub, "viewer", "jpeg")
    hub.force_key = False
    hub.distribute(b"d" * 100, False, P.KIND_VIDEO)  # unsynced: no delta, a keyframe is asked for
    assert not video.frames and hub.force_key
    hub.distribute(b"k" * 1000, True, P.KIND_VIDEO)
    hub.distribute(b"d" * 1000, False, P.KIND_VIDEO)
    assert video.frame_bytes == 2000 and video.synced
    hub.force_key = False
    hub.distribute(b"d" * 1000, False, P.KIND_VIDEO)  # over the bytes: all dropped, resync on a keyframe
    assert not video.frames and video.frame_bytes == 0 and video.dropped == 3 and video.resyncs == 1
    assert not video.synced and hub.force_key
    big = b"j" * 5000
    hub.distribute(big, True, P.KIND_JPEG)  # an empty queue always takes one frame
    hub.distribute(b"j" * 10, True, P.KIND_JPEG)  # latest wins
    assert list(jpeg.frames) == [b"j" * 10] and jpeg.dropped == 1
    assert hub.counters["dropped"] == 4
    assert jpeg.next_outgoing() == b"j" * 10 and jpeg.frame_bytes == 0 and jpeg.next_outgoing() is None


def test_replies_go_before_frames_and_sends_are_timed():
    hub, clock = make_hub()
    conn = connect(hub, "viewer", "jpeg")
    hub.distribute(b"j" * 10, True, P.KIND_JPEG)
    send(conn, {"type": "state", "id": 1})
    first = conn.next_outgoing()
    assert isinstance(first, str) and json.loads(first)["id"] == 1
    data = conn.next_outgoing()
    conn.sending()
    clock.t += 0.5
    conn.sent(data, 5_000_000)
    assert conn.sent_frames == 1 and conn.sent_bytes == 10 and list(hub.timings["send"]) == [5_000_000]
    assert conn.last_out == clock.t and conn.sending_since is None


def test_idle_timeout_and_send_timeout_decisions():
    hub, clock = make_hub(idle_timeout=10.0, send_timeout=3.0)
    conn = connect(hub)
    clock.t += 9.0
    assert conn.tick() == []
    send(conn, {"type": "state"})  # a message resets it
    conn.next_outgoing()
    clock.t += 9.0
    assert conn.tick() == []
    clock.t += 1.5
    effects = conn.tick()
    assert isinstance(effects[-1], C.Close) and effects[-1].code == 1001 and "idle" in effects[-1].reason
    assert hub.counters["clients_closed_idle"] == 1 and conn.tick() == []

    stuck = connect(hub)
    stuck.sending()  # a send that never completes: not idle, but aborted past the send timeout
    clock.t += 2.0
    assert stuck.tick() == []
    clock.t += 1.5
    effects = stuck.tick()
    assert isinstance(effects[-1], C.Abort) and stuck.aborted and stuck.closing
    assert hub.counters["clients_closed_send_timeout"] == 1 and stuck.tick() == []
    assert conn.tick_interval == pytest.approx(0.75)


def test_subscribe_and_keyframe_requests():
    hub, clock = make_hub(video=False)
    conn = connect(hub, "viewer", "jpeg")
    assert send(conn, {"type": "subscribe", "id": 1, "format": "video"}) == []
    assert send(conn, {"type": "subscribe", "id": 2, "format": "gif"}) == []
    a, b = take(conn)
    assert a["field"] == b["field"] == "format" and "no encoder" in a["message"]
    effects = send(conn, {"type": "subscribe", "id": 3, "format": "none"})
    assert any(isinstance(e, C.WakeProducer) for e in effects) and conn.format == "none"
    assert take(conn) == [{"type": "subscribed", "id": 3, "format": "none"}]

    hub, clock = make_hub()
    conn = connect(hub, "viewer", "video")
    hub.force_key = False
    send(conn, {"type": "keyframe"})
    assert hub.force_key and not conn.synced
    hub.force_key = False
    clock.t += 0.2
    send(conn, {"type": "keyframe"})  # honoured at most every 0.5 s per client
    assert not hub.force_key
    assert hub.take_keyframe() is False
    hub.request_keyframe()
    assert hub.take_keyframe() is True and hub.take_keyframe() is False  # one forced keyframe per 100 ms


def test_policy_message_pauses_and_instructs():
    hub, _ = make_hub()
    ctl, other = connect(hub), connect(hub, "viewer")
    assert send(ctl, {"type": "policy", "id": 1, "paused": True}) == []
    assert take(ctl)[0] == {"type": "error", "field": "policy", "id": 1,
                            "message": "this server runs no policy (dw serve --policy P)"}
    hub.policy = control = PolicyControl("random")
    for msg, field in (({"paused": "yes"}, "policy.paused"), ({"instruction": "a\x00b"}, "policy.instruction"),
                       ({"speed": 2}, "policy.speed"), ({}, "policy")):
        send(ctl, {"type": "policy", "id": 2, **msg})
        assert take(ctl)[0]["field"] == field
    effects = send(ctl, {"type": "policy", "id": 3, "paused": True, "instruction": "Click Cancel."})
    assert isinstance(effects[0], C.ReleaseInput)  # what the policy held is let go before a person acts
    audit = next(e for e in effects if isinstance(e, C.Audit))
    assert audit.event == "policy" and audit.fields["instruction_chars"] == len("Click Cancel.")
    assert control.paused and control.instruction == "Click Cancel."
    (reply,) = take(ctl)
    assert reply["id"] == 3 and reply["policy"]["paused"] is True
    (told,) = take(other)
    assert told["type"] == "policy" and told["client"] == ctl.id and "id" not in told
    effects = send(ctl, {"type": "policy", "id": 4, "paused": True})  # already paused: nothing more to release
    assert not any(isinstance(e, C.ReleaseInput) for e in effects)
    take(ctl), take(other)
    control.finish("done")
    hub.policy_stopped()
    assert take(other)[0]["policy"]["reason"] == "done"
    send(ctl, {"type": "policy", "id": 5, "paused": False})
    assert "stopped" in take(ctl)[-1]["message"]


def test_connection_caps_and_disconnect_releases_a_controllers_input():
    hub, _ = make_hub(max_connections=3, max_connections_per_address=2)
    a, b = connect(hub, address="x"), connect(hub, "viewer", address="x")
    with pytest.raises(Refusal) as e:
        hub.connect("viewer", "none", "x")
    assert e.value.status == HTTPStatus.TOO_MANY_REQUESTS and hub.counters["refused_handshakes"] == 1
    connect(hub, address="y")
    with pytest.raises(Refusal) as e:
        hub.check_caps("z")
    assert e.value.status == HTTPStatus.SERVICE_UNAVAILABLE

    hub.action_done(a, 1, Click(0.5, 0.5), STATE)
    gone = hub.disconnect(a)
    assert [type(e) for e in gone] == [C.ReleaseInput, C.Audit]
    assert gone[1].event == "disconnect" and gone[1].fields["actions"] == 1
    assert a not in hub.connections and hub.by_address == {"x": 1, "y": 1}
    assert [type(e) for e in hub.disconnect(b)] == [C.Audit]  # a viewer held nothing
    assert hub.disconnect(b) == []
    c = connect(hub, address="x")
    hub.action_done(c, 1, Click(0.5, 0.5), STATE)
    hub.stopping = True  # the server releases everything itself when it stops
    assert [type(e) for e in hub.disconnect(c)] == [C.Audit]


def test_held_buttons_and_their_release():
    held = C.HeldInput()
    for action in (MouseDown(0.1, 0.1, "left"), MouseDown(0.1, 0.1, "right"), MouseDown(0.2, 0.2, "middle")):
        held.before(action)
        held.after(action)
    held.before(MouseUp(0.3, 0.3, "middle"))
    held.after(MouseUp(0.3, 0.3, "middle"))
    assert held.buttons == {"left", "right"}
    buttons = held.take()
    assert buttons == ["left", "right"] and held.buttons == set()
    assert C.HeldInput.release_actions(buttons, (1.2, -0.1)) == [MouseUp(1.0, 0.0, "left"), MouseUp(1.0, 0.0, "right")]
    assert C.HeldInput.release_actions(["left"], None) == [MouseUp(0.5, 0.5, "left")]


def test_limits_are_checked():
    with pytest.raises(ValueError, match="send_timeout"):
        C.Limits(send_timeout=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        C.Limits(idle_timeout=-1)
    with pytest.raises(ValueError, match="at least 1"):
        C.Limits(max_connections=0)
    lim = C.Limits(frame_queue=0, action_rate=0, idle_timeout=None)
    assert lim.frame_queue == 1 and lim.action_rate is None and lim.to_json()["idle_timeout_s"] is None


def test_the_client_side_parses_server_messages_and_follows_the_desktop():
    hub, _ = make_hub()
    conn, _ = hub.connect("controller", "none", "a")
    hello = P.check_hello(P.parse_server_message(conn.next_outgoing()))
    view = C.DesktopView(hello)
    assert (view.instruction, view.cursor, view.finished) == ("Click OK.", (0.5, 0.5), False)
    hub.action_done(conn, 1, Click(0.5, 0.5), {**STATE, "cursor": [0.25, 0.75], "finished": True, "success": True})
    while (text := conn.next_outgoing()) is not None:
        view.update(P.parse_server_message(text))
    assert (view.cursor, view.finished, view.success) == ((0.25, 0.75), True, True)
    view.update({"type": "error", "field": "x", "message": "y", "cursor": None})  # not a state message
    assert view.cursor == (0.25, 0.75)
    for bad in ("[]", '{"type": 3}', "{"):
        with pytest.raises(P.ProtocolError):
            P.parse_server_message(bad)
    assert P.parse_server_message('{"type": "future"}') == {"type": "future"}  # unknown types are ignored later
    for hello_bad, field in (({**hello, "protocol": 2}, "protocol"), ({**hello, "type": "ack"}, "type"),
                             ({**hello, "role": "god"}, "role"), ({**hello, "screen": None}, "screen")):
        with pytest.raises(P.ProtocolError) as e:
            P.check_hello(hello_bad)
        assert e.value.field == field
