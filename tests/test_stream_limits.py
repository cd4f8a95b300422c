"""The stream server's limits and hostile clients (#41): clients that never read, floods of requests,
malformed Host headers, huge numbers, action rates, long waits, a failing producer, connection caps,
idle connections and token sources."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from agent.stream import protocol as P
from agent.stream import server as S
from agent.stream.server import ServerThread, StreamServer
from tests.test_stream import NoiseDesktop, _connect, _recv_frame, _recv_json, _rss_kib, _server

ROOT = Path(__file__).resolve().parent.parent


def _raw_ws(port: int, token: str, fmt: str = "none", rcvbuf: int | None = None) -> socket.socket:
    """A websocket handshake on a plain socket, so a test can send without ever reading."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall((f"GET /ws?token={token}&format={fmt} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    s.settimeout(5)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(1)  # byte by byte: read the handshake and nothing after it
        assert chunk, "closed during the handshake"
        got += chunk
    assert got.startswith(b"HTTP/1.1 101"), got[:100]
    return s


def _text_frame(text: str) -> bytes:
    """A masked client text frame (mask 0: the payload goes as is)."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126, n >> 8, n & 0xFF])
    return head + b"\x00\x00\x00\x00" + data


def _closed(sock: socket.socket, timeout: float) -> bool:
    """True once the server has sent a close frame, closed or reset ``sock`` (frames other than a close
    are read and skipped)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
            if not data or b"\x88" in data[:1]:
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


# -- 7: a client that never reads is dropped ---------------------------------------------------------
def test_a_client_that_never_reads_is_dropped_within_the_send_timeout():
    assert S.SEND_TIMEOUT <= 60
    with ServerThread(StreamServer(NoiseDesktop(), port=0, fps=30.0, send_timeout=1.5)) as srv:
        stuck = _raw_ws(srv.port, srv.viewer_token, "jpeg", rcvbuf=4096)  # and then it never reads
        t0 = time.monotonic()
        with _connect(srv.url, srv.viewer_token) as other:
            while srv.counters["clients_closed_send_timeout"] == 0 and time.monotonic() - t0 < 20:
                _recv_frame(other)  # the others keep receiving meanwhile
            dropped_after = time.monotonic() - t0
            assert srv.counters["clients_closed_send_timeout"] == 1, "the stuck client was not dropped"
            assert dropped_after < 10, dropped_after
            h, _ = _recv_frame(other)
            assert h.kind == P.KIND_VIDEO
            deadline = time.monotonic() + 5
            while len(srv.clients) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(srv.clients) == 1
        stuck.close()


# -- 8: reply queues bounded in bytes ------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's RSS")
def test_40_viewers_flooding_stats_without_reading_grow_the_server_by_under_64mb():
    token, viewer = "c" * 24, "v" * 24
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--port", "0", "--screen", "320x240", "--fps", "10",
         "--max-connections", "64", "--max-connections-per-address", "64"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DW_TOKEN": token, "DW_VIEWER_TOKEN": viewer})
    socks = []
    try:
        port = None
        deadline = time.monotonic() + 60
        banner = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            banner.append(line)
            m = re.search(r"ws://127\.0\.0\.1:(\d+)/ws", line)
            port = int(m.group(1)) if m else None
            assert line or proc.poll() is None, "dw serve exited"
        assert port
        while not any("viewer" in x for x in banner):
            banner.append(proc.stderr.readline())
        assert token not in "".join(banner) and "$DW_TOKEN" in "".join(banner)  # supplied tokens not echoed
        for _ in range(3):  # warm up
            with _connect(f"ws://127.0.0.1:{port}/ws", viewer) as ws:
                ws.recv(5)
                ws.send(json.dumps({"type": "stats"}))
                _recv_json(ws, "stats")
        before = _rss_kib(proc.pid)
        peak = before
        flood = _text_frame(json.dumps({"type": "stats"})) * 500
        for _ in range(40):
            s = _raw_ws(port, viewer, "none", rcvbuf=4096)
            socks.append(s)
        for s in socks:
            s.setblocking(False)
            try:
                s.sendall(flood)
            except (BlockingIOError, OSError):
                pass  # the server stopped reading this one (its queue is full): that is the point
            peak = max(peak, _rss_kib(proc.pid))
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            peak = max(peak, _rss_kib(proc.pid))
            time.sleep(0.05)
        assert proc.poll() is None, "the server died"
        grew = peak - before
        print(f"RSS {before} KiB, peak {peak} KiB: +{grew / 1024:.1f} MiB")
        assert grew < 64 * 1024, f"the server grew {grew / 1024:.0f} MiB"
        with _connect(f"ws://127.0.0.1:{port}/ws", token) as ws:  # and it still serves
            assert json.loads(ws.recv(5))["type"] == "hello"
            ws.send(json.dumps({"type": "stats", "id": 1}))
            st = _recv_json(ws, "stats", mid=1)
            assert st["counters"]["clients_closed_stuck"] >= 1, st["counters"]
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- 10: malformed Host --------------------------------------------------------------------------------
def _raw_http(port: int, head: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode())
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


@pytest.mark.parametrize("host", ["[", "127.0.0.1:99999", "127.0.0.1:x", "a b", "user@127.0.0.1", None, ""])
def test_a_malformed_or_missing_host_header_gets_a_400(host):
    with _server() as srv:
        for path, extra in (("/", ""), (f"/ws?token={srv.token}", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")):
            hline = f"Host: {host}\r\n" if host is not None else ""
            out = _raw_http(srv.port, f"GET {path} HTTP/1.1\r\n{hline}{extra}\r\n")
            status = out.split(b"\r\n", 1)[0]
            assert status.startswith(b"HTTP/1.1 400"), (host, path, out[:200])
            assert b"Traceback" not in out
        assert _raw_http(srv.port, f"GET / HTTP/1.1\r\nHost: localhost:{srv.port}\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_http_checks_without_sockets():
    from agent.stream import http as H

    assert H.host_name("127.0.0.1:8765") == "127.0.0.1" and H.host_name("[::1]:80") == "::1"
    for bad in ("[", "", None, "::1", "h:65536", "h/x", "h?x"):
        with pytest.raises(H.Refusal) as e:
            H.host_name(bad)
        assert e.value.status == 400
    with pytest.raises(H.Refusal) as e:
        H.check_host("evil.example", "127.0.0.1")
    assert e.value.status == 403
    H.check_host("evil.example", "0.0.0.0")  # not loopback-bound: any name
    with pytest.raises(H.Refusal):
        H.check_origin("http://evil.example", "127.0.0.1:1", set())
    H.check_origin("https://127.0.0.1:1", "127.0.0.1:1", set())
    assert H.role_for("a" * 10, "a" * 10, "b" * 10) == "controller" and H.role_for("x", "a", "b") is None
    with pytest.raises(H.Refusal) as e:
        H.static_file("/../../etc/passwd")
    assert e.value.status == 404


# -- validation: nothing a client sends ends its connection ----------------------------------------------
def test_a_400_digit_coordinate_gets_an_error_and_the_connection_stays_open(served):
    with _connect(served.url, served.token) as ws:
        _recv_json(ws, "hello")
        huge = "9" * 400
        for text in (f'{{"type": "action", "id": 1, "action": {{"type": "click", "x": {huge}, "y": 0.5}}}}',
                     f'{{"type": "action", "id": 2, "action": {{"type": "wait", "seconds": {huge}}}}}',
                     f'{{"type": "action", "id": 3, "action": {{"type": "scroll", "x": 0.5, "y": 0.5, "dy": {huge}}}}}',
                     '{"type": "action", "id": 4, "action": ' + "[" * 5000 + "]" * 5000 + "}",
                     '{"type": "stats", "id": 5, "x": ' + "9" * 5000 + "}"):
            ws.send(text)
            err = _recv_json(ws, "error")
            assert err["field"].startswith(("action", "message")), err
        ws.send(json.dumps({"type": "action", "id": 9, "action": {"type": "move", "x": 0.5, "y": 0.5}}))
        assert _recv_json(ws, "ack")["id"] == 9


@pytest.fixture(scope="module")
def served():
    with _server() as srv:
        yield srv


def test_viewers_see_key_combos_redacted(served):
    with _connect(served.url, served.token) as ws, _connect(served.url, served.viewer_token) as viewer:
        _recv_json(ws, "hello")
        _recv_json(viewer, "hello")
        ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "key", "keys": "ctrl+shift+p"}}))
        _recv_json(ws, "ack")
        assert _recv_json(ws, "applied")["action"]["keys"] == "ctrl+shift+p"  # the controller sees it
        seen = _recv_json(viewer, "applied")["action"]
        assert seen["type"] == "key" and "ctrl" not in json.dumps(seen)


# -- 9: action rate and wait cap ----------------------------------------------------------------------
def test_remote_controllers_are_rate_limited_and_waits_capped():
    with _server(action_rate=20, max_wait=2.0) as srv, _connect(srv.url, srv.token) as ws:
        _recv_json(ws, "hello")
        t0 = time.monotonic()
        for i in range(100):
            ws.send(json.dumps({"type": "action", "id": i, "action": {"type": "move", "x": 0.5, "y": 0.5}}))
        acks = errors = 0
        while acks + errors < 100:
            m = _recv_json(ws)
            if m["type"] == "ack":
                acks += 1
            elif m["type"] == "error":
                assert m["field"] == "action" and "rate limit" in m["message"], m
                errors += 1
        elapsed = time.monotonic() - t0
        assert errors > 0 and acks <= 20 * (elapsed + 1), (acks, elapsed)
        ws.send(json.dumps({"type": "action", "id": "w", "action": {"type": "wait", "seconds": 2.5}}))
        err = _recv_json(ws, "error", mid="w")
        assert err["field"] == "action.seconds" and "cap" in err["message"]
        assert srv.limits()["max_wait_s"] == 2.0 and S.MAX_WAIT > 0 and S.ACTION_RATE > 0


class RealtimeNoise(NoiseDesktop):
    realtime = True  # as the live screen: a wait takes real seconds

    def __init__(self):
        super().__init__((160, 120))


def test_a_wait_on_a_real_time_desktop_does_not_stop_the_frames():
    with ServerThread(StreamServer(RealtimeNoise(), port=0, fps=20.0)) as srv, \
            _connect(f"{srv.url}?format=jpeg&token={srv.token}") as ws:
        _recv_json(ws, "hello")
        ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "wait", "seconds": 1.0}}))
        t0 = time.monotonic()
        frames = 0
        while True:
            m = ws.recv(5)
            if isinstance(m, bytes):
                frames += 1
            elif json.loads(m).get("type") == "ack":
                break
        assert time.monotonic() - t0 >= 0.9 and frames >= 8, frames


# -- 13: the producer survives any exception ---------------------------------------------------------------
class FlakyDesktop(NoiseDesktop):
    def __init__(self):
        super().__init__((160, 120))
        self.fail = 0

    def observe(self):
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("a bug in the desktop")
        return super().observe()


def test_the_frame_producer_reports_and_survives_any_exception():
    desk = FlakyDesktop()
    with ServerThread(StreamServer(desk, port=0, fps=20.0)) as srv, _connect(srv.url, srv.viewer_token) as ws:
        _recv_frame(ws)
        desk.fail = 3
        err = _recv_json(ws, "error")
        assert err["field"] == "desktop" and "RuntimeError" in err["message"]
        h, _ = _recv_frame(ws, timeout=10)  # frames come back
        deadline = time.monotonic() + 5
        while desk.fail and time.monotonic() < deadline:
            h, _ = _recv_frame(ws)
        assert desk.fail == 0 and srv.counters["producer_errors"] == 3


# -- connection caps and idle connections ----------------------------------------------------------------
def test_connection_caps_total_and_per_address():
    with _server(max_connections=3, max_connections_per_address=2) as srv:
        a, b = _connect(srv.url, srv.viewer_token), _connect(srv.url, srv.viewer_token)
        with pytest.raises(InvalidStatus) as e:
            _connect(srv.url, srv.viewer_token)
        assert e.value.response.status_code == 429
        srv.max_connections_per_address = 10
        c = _connect(srv.url, srv.viewer_token)
        with pytest.raises(InvalidStatus) as e:
            _connect(srv.url, srv.viewer_token)
        assert e.value.response.status_code == 503
        for ws in (a, b, c):
            ws.close()
        deadline = time.monotonic() + 5
        while srv.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        with _connect(srv.url, srv.viewer_token) as ws:  # room again
            _recv_json(ws, "hello")


def test_an_idle_connection_is_closed():
    with _server(idle_timeout=1.0) as srv:
        s = _raw_ws(srv.port, srv.viewer_token, "none")
        t0 = time.monotonic()
        assert _closed(s, 10), "the idle connection stayed open"
        assert time.monotonic() - t0 < 6 and srv.counters["clients_closed_idle"] == 1
        s.close()
        with _connect(srv.url, srv.viewer_token) as ws:  # a client that talks is not idle
            _recv_json(ws, "hello")
            for i in range(4):
                time.sleep(0.5)
                ws.send(json.dumps({"type": "state", "id": i}))
                _recv_json(ws, "state")


# -- tokens from a file or the environment ------------------------------------------------------------------
def test_dw_serve_reads_tokens_from_a_file_and_refuses_a_bad_one(tmp_path):
    from agent.cli.commands.serve import _secret
    from agent.errors import UserError

    f = tmp_path / "token"
    f.write_text("s3cret-token-value\n")
    assert _secret(None, str(f), "DW_TOKEN", "--token") == ("s3cret-token-value", f"from {f}")
    with pytest.raises(UserError, match="not both"):
        _secret("x" * 10, str(f), "DW_TOKEN", "--token")
    with pytest.raises(UserError, match="No such file"):
        _secret(None, str(tmp_path / "missing"), "DW_TOKEN", "--token")
    os.environ["DW_TEST_TOKEN_41"] = "from-the-environment"
    try:
        assert _secret(None, None, "DW_TEST_TOKEN_41", "--token")[0] == "from-the-environment"
    finally:
        del os.environ["DW_TEST_TOKEN_41"]


def test_limits_are_announced_in_hello(served):
    with _connect(served.url, served.viewer_token) as ws:
        lim = _recv_json(ws, "hello")["limits"]
    assert lim["send_timeout_s"] == S.SEND_TIMEOUT and lim["control_queue_bytes"] == S.CONTROL_QUEUE_BYTES
    assert lim["max_connections"] == S.MAX_CONNECTIONS and lim["action_rate"] == S.ACTION_RATE



# -- TLS and the audit log ------------------------------------------------------------------------------------
def test_tls_self_signed_serves_wss_and_https():
    import http.client
    import ssl

    from agent.desktops.remote import RemoteDesktop
    from agent.desktops.virtual import VirtualDesktop
    from agent.stream.tls import client_context, fingerprint, self_signed_context
    from policies.actions import Move

    ctx, pem, fp = self_signed_context("127.0.0.1")
    assert fp == fingerprint(pem) and len(fp) == 95
    desk = VirtualDesktop("click-button", seed=0, size=(320, 240), fps=30.0)
    with ServerThread(StreamServer(desk, port=0, fps=30.0, ssl_context=ctx)) as srv:
        assert srv.url.startswith("wss://") and srv.http_url.startswith("https://")
        with RemoteDesktop(srv.url, srv.token, ssl=client_context(cadata=pem)) as r:
            assert r.observe().pixels.shape == (240, 320, 4)
            r.apply(Move(0.5, 0.5))
        c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=client_context(cadata=pem))
        c.request("GET", "/")
        assert c.getresponse().status == 200
        c.close()
        with pytest.raises((ssl.SSLError, OSError)):  # a client that does not trust it cannot connect
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=ssl.create_default_context())
            c.request("GET", "/")


def test_the_audit_log_records_connections_refusals_and_action_counts(tmp_path):
    from agent.stream.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    with _server(audit=AuditLog(path)) as srv:
        with _connect(srv.url, srv.token) as ws:
            _recv_json(ws, "hello")
            ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "move", "x": 0.5, "y": 0.5}}))
            _recv_json(ws, "ack")
        with pytest.raises(InvalidStatus):
            _connect(srv.url, "wrong-token-guess")
        deadline = time.monotonic() + 5
        while srv.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    assert (path.stat().st_mode & 0o777) == 0o600
    text = path.read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "start" and kinds[-1] == "stop" and "connect" in kinds and "refused" in kinds
    disc = [e for e in lines if e["event"] == "disconnect"][0]
    assert disc["role"] == "controller" and disc["actions"] == 1
    assert [e for e in lines if e["event"] == "refused"][0]["status"] == 403
    assert "wrong-token-guess" not in text and srv.token not in text
    AuditLog(path).write("again")  # append-only: earlier lines stay
    assert path.read_text().startswith(text)


def test_fuzz_http_headers_give_a_decision_never_a_crash():
    """Any Host, Origin, Authorization and path: a decision or a Refusal with a 4xx, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agent.stream import http as H

    header = st.one_of(st.none(), st.text(max_size=80),
                       st.sampled_from(["[", "]", "[::1", "127.0.0.1:", ":80", "localhost:0", "h:-1",
                                        "127.0.0.1:" + "9" * 400, "x" * 300, "[::1]:8765", "\x00"]))

    @settings(max_examples=1500, deadline=None, database=None)
    @given(host=header, origin=header, auth=header, path=st.text(max_size=80))
    def check(host, origin, auth, path):
        headers = {k: v for k, v in (("Host", host), ("Origin", origin), ("Authorization", auth)) if v is not None}
        try:
            H.check_host(headers.get("Host"), "127.0.0.1")
            H.check_websocket("/" + path, headers, bound_host="127.0.0.1", allow_origins=set(),
                              controller_token="c" * 24, viewer_token="v" * 24, formats=P.FORMATS)
        except H.Refusal as r:
            assert 400 <= r.status.value < 500
        try:
            H.static_file("/" + path)
        except H.Refusal as r:
            assert r.status.value == 404

    check()


@pytest.mark.parametrize("path", ["//[", "//]x", "/ws?//["])
def test_a_request_path_that_cannot_be_split_is_refused(path):
    """``//[`` makes urlsplit raise: the viewer's files answer 404 and the websocket endpoint 4xx."""
    from agent.stream import http as H

    with pytest.raises(H.Refusal) as r:
        H.static_file(path)
    assert r.value.status.value == 404
    try:
        H.check_websocket(path, {"Host": "127.0.0.1"}, bound_host="127.0.0.1", allow_origins=set(),
                          controller_token="c" * 24, viewer_token="v" * 24, formats=P.FORMATS)
    except H.Refusal as e:
        assert 400 <= e.status.value < 500
