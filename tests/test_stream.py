"""Live sessions over websockets: access, validation, backpressure, remote runs, robustness."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from agent.desktops import ActionRefused, DesktopError
from agent.desktops.remote import RemoteDesktop
from agent.desktops.virtual import VirtualDesktop, task_names
from agent.loop import Agent
from agent.stream import protocol as P
from agent.stream.server import ServerThread, StreamServer
from policies import load_policy
from policies.actions import Click, Move

ROOT = Path(__file__).resolve().parent.parent


def _server(task="click-button", size=(320, 240), fps=30.0, **kw) -> ServerThread:
    desk = VirtualDesktop(task, seed=0, size=size, fps=fps)
    return ServerThread(StreamServer(desk, port=0, fps=fps, **kw))


def _connect(url, token=None, *, query=True, **kw):
    if token is not None and query:
        url = f"{url}?token={token}"
    kw.setdefault("max_size", P.MAX_MESSAGE_OUT)
    return connect(url, compression=None, proxy=None, open_timeout=10, close_timeout=2, **kw).__enter__()


def _recv_json(ws, kind=None, timeout=10.0, *, mid=None):
    """The next text message of type ``kind`` and/or with id ``mid`` (frames and other messages are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = ws.recv(max(0.01, deadline - time.monotonic()))
        if isinstance(msg, str):
            obj = json.loads(msg)
            if kind in (None, obj.get("type")) and mid in (None, obj.get("id")):
                return obj


def _recv_frame(ws, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        msg = ws.recv(max(0.01, deadline - time.monotonic()))
        if isinstance(msg, bytes):
            return P.unpack_header(msg), msg


@pytest.fixture(scope="module")
def served():
    with _server() as srv:
        yield srv


# -- access ----------------------------------------------------------------------------------------
def test_no_token_or_wrong_token_is_refused_at_handshake(served):
    with pytest.raises(InvalidStatus) as e:
        _connect(served.url)
    assert e.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as e:
        _connect(served.url, "not-the-token")
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        _connect(served.url, additional_headers={"Authorization": "Bearer wrong"})
    assert e.value.response.status_code == 403
    with pytest.raises(DesktopError, match="401|403"):
        RemoteDesktop(served.url, "nope")


def test_bearer_header_and_query_token_both_work_and_roles_follow_the_token(served):
    with _connect(served.url, additional_headers={"Authorization": f"Bearer {served.token}"}) as ws:
        hello = _recv_json(ws, "hello")
        assert hello["role"] == "controller" and hello["protocol"] == P.PROTOCOL_VERSION
        assert hello["screen"]["width"] == 320 and hello["screen"]["scale"] == 1.0
        v = hello["video"]
        assert v and v["codec"] and re.match(r"^[a-z0-9]{4}\.", v["codec_string"]), v
    with _connect(served.url, served.viewer_token) as ws:
        assert _recv_json(ws, "hello")["role"] == "viewer"


def test_h264_codec_string_carries_the_real_level():
    # whatever the ladder chose, the codec string comes from the encoder and names the level it coded
    with _server(size=(1920, 1080)) as srv:
        v = srv.encoder.describe()
    if v["family"] == "h264":
        level = int(v["codec_string"][-2:], 16)
        assert level >= 40, v["codec_string"]  # 1080p30 needs level 4.0


def test_viewer_cannot_act(served):
    with _connect(served.url, served.viewer_token) as ws:
        _recv_json(ws, "hello")
        ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "click", "x": 0.5, "y": 0.5}}))
        err = _recv_json(ws, "error")
        assert err["field"] == "role" and err["id"] == 1
        ws.send(json.dumps({"type": "expert", "id": 2}))
        assert _recv_json(ws, "error")["field"] == "role"
        ws.send(json.dumps({"type": "stats", "id": 3}))  # but it may watch and ask for stats
        assert _recv_json(ws, "stats")["id"] == 3


def test_browser_origin_must_be_same_origin_or_allowed():
    with _server(allow_origins=["https://allowed.example"]) as srv:
        with pytest.raises(InvalidStatus) as e:
            _connect(srv.url, srv.token, origin="http://evil.example")
        assert e.value.response.status_code == 403
        for origin in (f"http://127.0.0.1:{srv.port}", "https://allowed.example"):
            with _connect(srv.url, srv.token, origin=origin) as ws:
                assert _recv_json(ws, "hello")["role"] == "controller"


def _get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one request per connection
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        c.close()


def test_static_viewer_is_served_and_foreign_host_is_refused(served):
    status, ctype, body = _get(served.port, "/")
    assert status == 200 and b"viewer.js" in body and ctype.startswith("text/html")
    status, ctype, body = _get(served.port, "/viewer.js")
    assert status == 200 and b"VideoDecoder" in body and "javascript" in ctype
    assert _get(served.port, "/../../etc/passwd")[0] == 404
    assert _get(served.port, "/", {"Host": "rebound.evil.example"})[0] == 403  # DNS rebinding


def test_server_binds_loopback_by_default():
    assert StreamServer.__init__.__kwdefaults__["host"] == "127.0.0.1"


# -- validation: bad messages hurt only their sender ---------------------------------------------------
def test_bad_messages_get_an_error_naming_the_field_and_the_server_goes_on(served):
    with _connect(served.url, served.token) as ws, _connect(served.url, served.viewer_token) as other:
        _recv_json(ws, "hello")
        _recv_json(other, "hello")
        cases = [
            ("{not json", "message"),
            ("[1, 2]", "message"),
            (json.dumps({"type": "teleport"}), "type"),
            (json.dumps({"type": "action", "id": 7, "action": {"type": "teleport", "x": 0.5}}), "action.type"),
            (json.dumps({"type": "action", "id": 8, "action": {"type": "click", "x": 1.5, "y": 0.5}}), "action.x"),
            (json.dumps({"type": "action", "id": 9, "action": {"type": "click", "x": 0.5, "y": "no"}}), "action.y"),
            (json.dumps({"type": "action", "id": 10, "action": {"type": "move", "x": 0.5, "y": 0.5, "z": 1}}),
             "action.z"),
            (json.dumps({"type": "subscribe", "format": "gif"}), "format"),
            ('{"type": "action", "action": {"type": "move", "x": NaN, "y": 0}}', "action.x"),
        ]
        for text, fieldname in cases:
            ws.send(text)
            err = _recv_json(ws, "error")
            assert err["field"] == fieldname, (text, err)
        ws.send(b"\x00binary")
        assert _recv_json(ws, "error")["field"] == "message"
        # the same connection still acts
        ws.send(json.dumps({"type": "action", "id": 11, "action": {"type": "move", "x": 0.25, "y": 0.75}}))
        ack = _recv_json(ws, "ack")
        assert ack["id"] == 11 and ack["cursor"][0] == pytest.approx(0.25, abs=0.01)
        assert _recv_json(other, "applied")["action"]["type"] == "move"  # broadcast to watchers
        ws.send(json.dumps({"type": "action", "id": 12, "action": {"type": "type", "text": "hunter2"}}))
        assert _recv_json(ws, "ack")["id"] == 12
        seen = _recv_json(other, "applied")["action"]
        assert seen["type"] == "type" and "hunter2" not in json.dumps(seen)  # viewers don't see typed text


def test_a_100mb_message_closes_only_that_client(served):
    with _connect(served.url, served.viewer_token) as other:
        _recv_json(other, "hello")
        ws = _connect(served.url, served.token)
        _recv_json(ws, "hello")
        try:
            ws.send("x" * (100 * 1024 * 1024))
        except (ConnectionClosed, OSError):
            pass
        with pytest.raises(ConnectionClosed) as e:
            while True:
                ws.recv(10)
        assert e.value.rcvd is None or e.value.rcvd.code == 1009
        ws.close()
        _recv_frame(other)  # the other client still receives frames
        other.send(json.dumps({"type": "stats", "id": 1}))
        assert _recv_json(other, "stats")["counters"]["connections"] >= 2
    with RemoteDesktop(served.url, served.token) as r:  # and new clients still act
        r.apply(Move(0.5, 0.5))


def test_a_client_vanishing_mid_frame_does_not_hurt_the_server():
    with _server(size=(640, 480)) as srv:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall((f"GET /ws?token={srv.token} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            s.settimeout(5)
            got = b""
            while len(got) < 3000:  # the handshake, hello, and part of the keyframe
                chunk = s.recv(1024)
                if not chunk:
                    break
                got += chunk
            assert b"101" in got.split(b"\r\n", 1)[0]
            # half a client frame (header says 1000 bytes, 10 sent), then a hard reset
            s.sendall(bytes([0x81, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4]) + b"x" * 10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        with RemoteDesktop(srv.url, srv.token) as r:
            r.observe()
            r.apply(Click(0.5, 0.5))
            assert r.observe().pixels.shape == (480, 640, 4)
        deadline = time.monotonic() + 5
        while srv.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not srv.clients


# -- frames, keyframes, backpressure ----------------------------------------------------------------
def test_a_joining_client_starts_on_a_keyframe_and_jpeg_clients_get_jpeg(served):
    for _ in range(3):
        with _connect(served.url, served.viewer_token) as ws:
            h, _ = _recv_frame(ws)
            assert h.kind == P.KIND_VIDEO and h.keyframe
    with _connect(served.url + "?format=jpeg&token=" + served.viewer_token, None) as ws:
        h, data = _recv_frame(ws)
        assert h.kind == P.KIND_JPEG and data[P.HEADER_SIZE:P.HEADER_SIZE + 2] == b"\xff\xd8"
        assert h.capture_us > 0 and abs(h.capture_us / 1e6 - time.time()) < 5


class NoiseDesktop:
    """Incompressible frames (every one a few hundred KiB encoded): sockets fill fast."""

    def __init__(self, size=(640, 480)):
        from capture import Screen

        self.screen = Screen(*size)
        self.rng = np.random.default_rng(0)
        self.i = 0
        self.cursor = (0.5, 0.5)

    def observe(self):
        from capture import Frame

        self.i += 1
        px = self.rng.integers(0, 256, (self.screen.height, self.screen.width, 4), dtype=np.uint8)
        return Frame(px, self.i / 30, self.i, self.screen)

    def apply(self, action):
        self.cursor = action.point or self.cursor

    def now(self):
        return self.i / 30

    def close(self):
        pass

    instruction, oracle, finished, success = "", None, False, None

    def info(self):
        return {"kind": "noise"}


def test_a_slow_client_drops_frames_and_resyncs_without_stalling_others():
    with ServerThread(StreamServer(NoiseDesktop(), port=0, fps=30.0, frame_queue=2)) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        slow = _connect(srv.url, srv.viewer_token, max_size=None, sock=sock)  # and then it stops reading
        with RemoteDesktop(srv.url, srv.token) as fast:
            fast.observe()
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 2.0:
                fast.apply(Move(0.1 + 0.8 * (n % 10) / 10, 0.5))
                fast.observe()
                n += 1
            st = fast.server_stats()
        fps_fast = n / 2.0
        assert fps_fast > 8, f"the fast client was stalled: {fps_fast:.1f} steps/s"
        me = [c for c in st["clients"] if c["role"] == "viewer"][0]
        assert me["dropped"] > 0 and me["resyncs"] > 0, me
        assert st["counters"]["dropped"] >= me["dropped"]
        # the slow client recovers on a keyframe once it reads again
        first_key_after_gap = None
        last = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and first_key_after_gap is None:
            msg = slow.recv(5)
            if isinstance(msg, bytes):
                h = P.unpack_header(msg)
                if last is not None and h.index > last + 1:
                    first_key_after_gap = h.keyframe
                last = h.index
        slow.close()
        assert first_key_after_gap is True, "after dropped frames the stream must resume on a keyframe"


# -- remote agent ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", task_names())
def test_remote_scripted_run_matches_local(task):
    size = (640, 480)
    for seed in (0, 1):
        local = VirtualDesktop(task, seed=seed, size=size, fps=10.0)
        res_local = Agent(local, load_policy("scripted"), max_steps=100).run()
        desk = VirtualDesktop(task, seed=seed, size=size, fps=30.0)
        with ServerThread(StreamServer(desk, port=0, fps=30.0)) as srv:
            with RemoteDesktop(srv.url, srv.token) as remote:
                assert remote.instruction == local.instruction
                res_remote = Agent(remote, load_policy("scripted"), max_steps=100).run()
        assert res_local.success is True, (task, seed, res_local.to_json())
        assert res_remote.success == res_local.success, (task, seed, res_remote.to_json())
        assert res_remote.errors == [] and res_remote.refused == 0


def test_remote_frames_match_the_served_desktop():
    with _server(task="click-checkboxes", size=(640, 480), fps=30.0) as srv:
        for fmt in ("video", "jpeg"):
            with RemoteDesktop(srv.url, srv.token, format=fmt) as r:
                assert r.format == fmt
                r.apply(Move(0.02, 0.02))
                f = r.observe()
                ref, _ = srv.wait_frame(f.index)  # this frame or a later one: the screen is still
                assert f.pixels.shape == ref.pixels.shape
                diff = np.abs(f.pixels[..., :3].astype(int) - ref.pixels[..., :3].astype(int)).mean()
                assert diff < 4, (fmt, diff)


def test_remote_refusal_and_connection_loss():
    t = _server()
    srv = t.start()
    r = RemoteDesktop(srv.url, srv.viewer_token)
    with pytest.raises(ActionRefused, match="role"):
        r.apply(Click(0.5, 0.5))
    assert r.oracle is None  # viewers get no expert
    r.observe()
    t.stop()
    with pytest.raises(DesktopError):
        for _ in range(50):
            r.observe()
    with pytest.raises(DesktopError):
        r.apply(Move(0.5, 0.5))
    r.close()


# -- the server process: many clients, flat memory --------------------------------------------------
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's RSS")
def test_1000_connect_disconnect_cycles_leave_the_server_alive_with_flat_memory():
    token = "t" * 24
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--port", "0", "--screen", "320x240", "--fps", "30",
         "--token", token, "--viewer-token", "v" * 24],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"(ws://\S+/ws)", line)
            url = m.group(1) if m else None
            assert line or proc.poll() is None, "dw serve exited"
        assert url, "dw serve printed no address"

        def cycles(n: int) -> None:
            for i in range(n):
                with _connect(url, token if i % 2 else "v" * 24) as ws:
                    ws.recv(5)  # hello
                    if i % 10 == 0:
                        ws.recv(5)  # and a frame now and then

        cycles(200)  # warm up: encoder buffers, allocator pools
        before = _rss_kib(proc.pid)
        t0 = time.monotonic()
        cycles(1000)
        elapsed = time.monotonic() - t0
        after = _rss_kib(proc.pid)
        assert proc.poll() is None, "the server died"
        with _connect(url, token) as ws:
            assert json.loads(ws.recv(5))["type"] == "hello"
            ws.send(json.dumps({"type": "stats", "id": 1}))
            st = _recv_json(ws, "stats")
        assert st["counters"]["connections"] >= 1201
        assert len(st["clients"]) == 1, st["clients"]
        print(f"RSS {before} -> {after} KiB over 1000 cycles in {elapsed:.1f} s")
        assert after - before < 8 * 1024, f"RSS grew {after - before} KiB over 1000 cycles ({elapsed:.1f} s)"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- latency ------------------------------------------------------------------------------------------
def test_stream_benchmark_reports_every_stage_at_1080p():
    # The latency figures themselves belong to `dw bench stream`, not to a timed unit test.
    from agent.bench.stream import run, table

    result = run(sizes=[(1920, 1080)], quick=True)
    row = result["rows"][0]
    stages = row["stages"]
    assert {"capture", "encode", "decode", "end_to_end"} <= set(stages)
    e2e = stages["end_to_end"]
    assert e2e["n"] >= 20
    assert 0 < stages["encode"]["p50_ms"] <= e2e["p50_ms"]
    assert table(result).row_count == len(result["rows"])


# -- the command line: dw serve + dw run --desktop ws://... ---------------------------------------------
def _serve_proc(*extra: str, token: str = "c" * 24):
    """``dw serve --port 0 ...`` in a process, and the websocket URL it prints (ws:// or, with
    ``--tls-cert``, wss://)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--port", "0", "--token", token, *extra],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"websocket\s+(wss?://[\d.]+:\d+)/ws", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("dw serve did not start")


def test_dw_run_against_dw_serve_matches_a_local_run():
    task, seed = "drag-slider", 2
    local = Agent(VirtualDesktop(task, seed=seed, size=(800, 600)), load_policy("scripted"), max_steps=100).run()
    proc, url = _serve_proc("--tasks", task, "--seed", str(seed), "--screen", "800x600")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--desktop", url, "--token", "c" * 24,
             "--policy", "scripted", "--max-steps", "100", "--json"],
            capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["success"] is True and out["success"] == local.success, out
        bad = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--desktop", url, "--token", "wrong-token",
             "--policy", "scripted"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert bad.returncode == 2 and "403" in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait(10)


def test_without_video_the_server_and_client_fall_back_to_jpeg():
    with _server(video=False) as srv:
        with _connect(srv.url, srv.viewer_token) as ws:
            hello = _recv_json(ws, "hello")
            assert hello["video"] is None and hello["format"] == "jpeg"
            ws.send(json.dumps({"type": "subscribe", "id": 1, "format": "video"}))
            assert _recv_json(ws, "error")["field"] == "format"
        with RemoteDesktop(srv.url, srv.token) as r:
            assert r.format == "jpeg"
            assert r.observe().pixels.shape == (240, 320, 4)


class BlindDesktop(NoiseDesktop):
    """Capture fails (dead-man) while ``blind`` is set."""

    blind = False

    def observe(self):
        if self.blind:
            raise DesktopError("dead-man: no frame for 5 s (capture hung)")
        return super().observe()


def test_actions_are_refused_while_the_served_capture_fails():
    desk = BlindDesktop(size=(160, 120))
    with ServerThread(StreamServer(desk, port=0, fps=30.0)) as srv:
        ws = _connect(srv.url, srv.token)
        _recv_frame(ws)
        desk.blind = True
        err = _recv_json(ws, "error")  # the producer tells every client
        assert err["field"] == "desktop" and "dead-man" in err["message"]
        ws.send(json.dumps({"type": "action", "id": 7, "action": {"type": "move", "x": 0.2, "y": 0.2}}))
        ref = _recv_json(ws, "error", mid=7)  # past the producer's repeated capture errors
        assert ref["id"] == 7 and ref["field"] == "action" and "no fresh frame" in ref["message"]
        assert desk.cursor == (0.5, 0.5)  # nothing reached the desktop
        desk.blind = False  # frames flow again: actions are accepted once the next capture succeeds
        deadline, ack = time.monotonic() + 10, None
        while ack is None and time.monotonic() < deadline:
            ws.send(json.dumps({"type": "action", "id": 8, "action": {"type": "move", "x": 0.2, "y": 0.2}}))
            msg = _recv_json(ws, mid=8)
            ack = msg if msg["type"] == "ack" else None
            if ack is None:
                assert "no fresh frame" in msg["message"]
                time.sleep(0.1)
        assert ack is not None and desk.cursor == (0.2, 0.2)
        ws.close()

