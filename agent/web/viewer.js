// digital-worker browser viewer: WebCodecs VideoDecoder (optimizeForLatency) with a JPEG fallback,
// an overlay of the agent's cursor and clicks, live fps and latency. Wire format: docs/protocol.md.
"use strict";
(() => {
  const HEADER = 32, KIND_VIDEO = 1, KIND_JPEG = 2, PROTOCOL = 1;
  const $ = (id) => document.getElementById(id);
  const video = $("video"), overlay = $("overlay");
  const vctx = video.getContext("2d", { alpha: false });
  const octx = overlay.getContext("2d");
  const params = new URLSearchParams(location.search);
  const hashParams = new URLSearchParams(location.hash.slice(1));
  const token = hashParams.get("token") || params.get("token") || "";
  const forced = params.get("format"); // "jpeg" forces the fallback (tests, old browsers)

  // State, exposed for tests and debugging.
  const S = window.dwViewer = {
    mode: "connecting", frames: 0, decoded: 0, dropped: 0, errors: [], hello: null, latencyMs: null,
    fps: 0, lastIndex: -1, cursor: null, clicks: [], stats: null, closed: null, codec: null,
  };
  let ws = null, decoder = null, needKey = true, screen = null, content = null;
  const pendingCapture = new Map(); // timestamp(us) -> capture wall-clock ms
  let fpsCount = 0, fpsT0 = performance.now(), latencies = [];

  function status(text, bad) { $("status").textContent = text; $("status").className = bad ? "bad" : ""; }

  function sizeCanvases(w, h) {
    for (const c of [video, overlay]) { if (c.width !== w || c.height !== h) { c.width = w; c.height = h; } }
  }

  function send(obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); }

  function frameDrawn(captureMs) {
    S.frames++; fpsCount++;
    const lat = Date.now() - captureMs; // same clock on loopback; across machines it includes clock offset
    S.latencyMs = lat; latencies.push(lat);
    const now = performance.now();
    if (now - fpsT0 >= 1000) {
      S.fps = fpsCount * 1000 / (now - fpsT0); fpsCount = 0; fpsT0 = now;
      latencies.sort((a, b) => a - b);
      const p50 = latencies.length ? latencies[Math.floor(latencies.length / 2)] : 0;
      $("fps").textContent = S.fps.toFixed(1);
      $("latency").textContent = `${p50.toFixed(0)} ms p50`;
      latencies = [];
      send({ type: "stats" });
    }
  }

  async function setupVideo(v) {
    if (forced === "jpeg" || !v || !v.codec_string || typeof VideoDecoder === "undefined") return false;
    const config = { codec: v.codec_string, codedWidth: v.coded_width, codedHeight: v.coded_height,
                     optimizeForLatency: true, hardwareAcceleration: "no-preference" };
    try {
      const support = await VideoDecoder.isConfigSupported(config);
      if (!support.supported) return false;
    } catch (e) { S.errors.push("isConfigSupported: " + e); return false; }
    if (decoder && decoder.state !== "closed") decoder.close();
    decoder = new VideoDecoder({
      output: (frame) => {
        const cap = pendingCapture.get(frame.timestamp);
        pendingCapture.delete(frame.timestamp);
        // the coded picture may be padded (and, on a downscale rung, smaller): draw its content into the screen size
        vctx.drawImage(frame, 0, 0, content.w, content.h, 0, 0, video.width, video.height);
        frame.close();
        S.decoded++;
        if (cap !== undefined) frameDrawn(cap);
      },
      error: (e) => { S.errors.push("decoder: " + e.message); needKey = true; resetDecoder(config); },
    });
    decoder.configure(config);
    S.codec = v.codec_string;
    return true;
  }

  function resetDecoder(config) {
    try { if (decoder && decoder.state !== "closed") { decoder.reset(); decoder.configure(config); } } catch (e) {}
    send({ type: "keyframe" });
  }

  function onFrame(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < HEADER || dv.getUint8(0) !== 0x44 || dv.getUint8(1) !== 0x57) return;
    if (dv.getUint8(2) !== PROTOCOL) return;
    const kind = dv.getUint8(3), key = (dv.getUint8(4) & 1) === 1, index = dv.getUint32(8, true);
    const pts = dv.getUint32(12, true);
    const captureMs = Number(dv.getBigUint64(16, true)) / 1000;
    if (S.lastIndex >= 0 && index > S.lastIndex + 1) S.dropped += index - S.lastIndex - 1;
    S.lastIndex = index;
    const payload = new Uint8Array(buf, HEADER);
    if (kind === KIND_VIDEO && decoder) {
      if (needKey && !key) return;
      needKey = false;
      if (decoder.decodeQueueSize > 3) { needKey = true; send({ type: "keyframe" }); return; }
      const ts = index * 1000 + 1; // unique per frame: matches the output to its capture time
      pendingCapture.set(ts, captureMs);
      if (pendingCapture.size > 64) pendingCapture.delete(pendingCapture.keys().next().value);
      try {
        decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: ts, data: payload }));
      } catch (e) { S.errors.push("decode: " + e); needKey = true; send({ type: "keyframe" }); }
    } else if (kind === KIND_JPEG) {
      createImageBitmap(new Blob([payload], { type: "image/jpeg" })).then((bmp) => {
        vctx.drawImage(bmp, 0, 0, video.width, video.height);
        bmp.close();
        S.decoded++;
        frameDrawn(captureMs);
      }, (e) => S.errors.push("jpeg: " + e));
    }
  }

  function drawOverlay() {
    octx.clearRect(0, 0, overlay.width, overlay.height);
    const now = performance.now();
    S.clicks = S.clicks.filter((c) => now - c.at < 800);
    for (const c of S.clicks) {
      const k = (now - c.at) / 800;
      octx.beginPath();
      octx.arc(c.x * overlay.width, c.y * overlay.height, 6 + 24 * k, 0, 2 * Math.PI);
      octx.strokeStyle = `rgba(255, 80, 40, ${1 - k})`;
      octx.lineWidth = 3;
      octx.stroke();
    }
    if (S.cursor) {
      const x = S.cursor[0] * overlay.width, y = S.cursor[1] * overlay.height;
      octx.beginPath();
      octx.arc(x, y, 9, 0, 2 * Math.PI);
      octx.strokeStyle = "rgba(40, 200, 255, 0.9)";
      octx.lineWidth = 2;
      octx.stroke();
    }
    requestAnimationFrame(drawOverlay);
  }

  async function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.type === "hello") {
      S.hello = msg;
      if (msg.protocol !== PROTOCOL) { status(`protocol ${msg.protocol} unsupported`, true); ws.close(); return; }
      screen = msg.screen;
      sizeCanvases(screen.width, screen.height);
      const v = msg.video;
      content = v ? { w: v.content_width, h: v.content_height } : { w: screen.width, h: screen.height };
      S.cursor = msg.desktop && msg.desktop.cursor;
      $("instruction").textContent = (msg.desktop && msg.desktop.instruction) || "";
      const ok = await setupVideo(v);
      S.mode = ok ? "video" : "jpeg";
      $("mode").textContent = ok ? `${S.mode} ${v.codec_string}` : "jpeg";
      status(`${msg.role} · ${screen.width}×${screen.height}@${screen.scale}`);
      send({ type: "subscribe", format: S.mode });
    } else if (msg.type === "video") { // the server's encoder switched rungs
      const v = msg.video;
      content = { w: v.content_width, h: v.content_height };
      const ok = await setupVideo(v);
      if (!ok) { S.mode = "jpeg"; send({ type: "subscribe", format: "jpeg" }); }
      needKey = true;
    } else if (msg.type === "applied") {
      if (msg.cursor) S.cursor = msg.cursor;
      const a = msg.action || {};
      if (["click", "mouse_down", "drag", "scroll"].includes(a.type)) S.clicks.push({ x: a.x, y: a.y, at: performance.now() });
    } else if (msg.type === "state") {
      if (msg.cursor) S.cursor = msg.cursor;
      if (msg.instruction !== undefined) $("instruction").textContent = msg.instruction +
        (msg.finished ? (msg.success ? " — done ✓" : " — ended") : "");
    } else if (msg.type === "stats") {
      S.stats = msg;
      const st = msg.stages || {};
      const cap = st.capture ? st.capture.p50_ms : 0, enc = st.encode ? st.encode.p50_ms : 0;
      $("server").textContent = `capture ${cap.toFixed(1)} ms · encode ${enc.toFixed(1)} ms · ` +
        `${msg.clients ? msg.clients.length : 0} clients`;
    } else if (msg.type === "error") {
      S.errors.push(`${msg.field}: ${msg.message}`);
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws?format=none&token=${encodeURIComponent(token)}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => { if (typeof ev.data === "string") onText(ev.data); else onFrame(ev.data); };
    ws.onclose = (ev) => { S.closed = ev.code; status(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`, true); };
    ws.onerror = () => status("connection failed (token?)", true);
  }

  if (!token) status("add #token=… to the address", true);
  connect();
  requestAnimationFrame(drawOverlay);
})();
