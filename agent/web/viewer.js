// digital-worker browser viewer: WebCodecs VideoDecoder (optimizeForLatency) with a JPEG fallback,
// an overlay of the agent's cursor and clicks, live fps and latency, a log of applied actions and, with
// the controller token, takeover (mouse and keyboard to the desktop) and the in-process policy's
// pause/resume and instruction. Wire format: docs/protocol.md.
"use strict";
(() => {
  const HEADER = 32, KIND_VIDEO = 1, KIND_JPEG = 2, PROTOCOL = 1;
  const MOVE_MS = 50;     // pointer moves and wheel notches sent at most this often (the server caps actions/s)
  const TYPE_MS = 40;     // typed characters are gathered this long into one `type` action
  const LOG_MAX = 40;     // entries in the action log
  const $ = (id) => document.getElementById(id);
  const video = $("video"), overlay = $("overlay"), wrap = $("wrap"), stage = $("stage");
  const vctx = video.getContext("2d", { alpha: false });
  const octx = overlay.getContext("2d");
  const params = new URLSearchParams(location.search);
  const hashParams = new URLSearchParams(location.hash.slice(1));
  const token = hashParams.get("token") || params.get("token") || "";
  const forced = params.get("format"); // "jpeg" forces the fallback (tests, old browsers)

  // State, exposed for tests and debugging.
  const S = window.dwViewer = {
    mode: "connecting", frames: 0, decoded: 0, videoFrames: 0, jpegFrames: 0, lastKind: null, firstDrawMs: null,
    dropped: 0, errors: [], hello: null, latencyMs: null, fps: 0, lastIndex: -1, cursor: null, clicks: [],
    stats: null, closed: null, codec: null, role: null, takeover: false, held: [], log: [], policy: null,
    sent: 0, send: (obj) => send(obj),
  };
  let ws = null, decoder = null, needKey = true, screen = null, content = null, drawnIndex = -1;
  const pendingCapture = new Map(); // timestamp(us) -> capture wall-clock ms
  const drawTimes = [], latencies = []; // the last frames drawn: performance.now() and capture-to-draw ms
  const t0 = performance.now();

  function status(text, bad) { $("status").textContent = text; $("status").className = bad ? "bad" : ""; }

  function sizeCanvases(w, h) {
    for (const c of [video, overlay]) { if (c.width !== w || c.height !== h) { c.width = w; c.height = h; } }
    fit();
  }

  // The canvas keeps the screen's aspect ratio inside the stage; pointer coordinates are read from its box.
  function fit() {
    if (!screen) return;
    const k = Math.min(stage.clientWidth / screen.width, stage.clientHeight / screen.height, 1) || 1;
    video.style.width = `${Math.floor(screen.width * k)}px`;
    video.style.height = `${Math.floor(screen.height * k)}px`;
  }
  window.addEventListener("resize", fit);

  function send(obj) {
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify(obj)); S.sent++; return true; }
    return false;
  }

  // -- fps and latency: shown from the first picture on, refreshed by a timer (a static screen too) ----------
  function frameDrawn(captureMs, index, kind) {
    if (index < drawnIndex) return false;
    drawnIndex = index;
    const now = performance.now();
    S.frames++; S.lastKind = kind;
    if (kind === "video") S.videoFrames++; else S.jpegFrames++;
    const lat = Date.now() - captureMs; // same clock on loopback; across machines it includes clock offset
    S.latencyMs = lat;
    drawTimes.push(now); latencies.push(lat);
    if (drawTimes.length > 240) drawTimes.shift();
    if (latencies.length > 60) latencies.shift();
    if (S.firstDrawMs === null) { S.firstDrawMs = now - t0; showRates(); }
    return true;
  }

  function showRates() {
    const now = performance.now();
    const recent = drawTimes.filter((t) => now - t <= 1000), n = recent.length;
    const since = S.firstDrawMs === null ? 0 : now - t0 - S.firstDrawMs;
    if (since >= 400) {
      // frames drawn per second over the last second (or since the first picture, counting its intervals):
      // 0 when none came; a burst of two pictures at the start is not read as hundreds of fps
      S.fps = since < 1000 ? (n - 1) * 1000 / since : n;
      $("fps").textContent = S.fps.toFixed(1);
    }
    if (latencies.length) {
      const sorted = latencies.slice(-30).sort((a, b) => a - b);
      $("latency").textContent = `${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms p50`;
    }
  }
  setInterval(showRates, 500);
  setInterval(() => { if (S.hello) send({ type: "stats" }); }, 1000);

  // -- pictures -------------------------------------------------------------------------------------------------
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
        const ts = frame.timestamp, cap = pendingCapture.get(ts);
        pendingCapture.delete(ts);
        // the coded picture may be padded (and, on a downscale rung, smaller): draw its content into the screen size
        vctx.drawImage(frame, 0, 0, content.w, content.h, 0, 0, video.width, video.height);
        frame.close();
        S.decoded++;
        frameDrawn(cap !== undefined ? cap : Date.now(), Math.floor(ts / 1000), "video");
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
    const captureMs = Number(dv.getBigUint64(16, true)) / 1000;
    if (S.lastIndex >= 0 && index > S.lastIndex + 1) S.dropped += index - S.lastIndex - 1;
    S.lastIndex = index;
    const payload = new Uint8Array(buf, HEADER);
    if (kind === KIND_VIDEO && decoder) {
      if (needKey && !key) return;
      needKey = false;
      if (decoder.decodeQueueSize > 3) { needKey = true; send({ type: "keyframe" }); return; }
      const ts = index * 1000 + 1; // unique per frame: matches the output to its capture time and index
      pendingCapture.set(ts, captureMs);
      if (pendingCapture.size > 64) pendingCapture.delete(pendingCapture.keys().next().value);
      try {
        decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: ts, data: payload }));
      } catch (e) { S.errors.push("decode: " + e); needKey = true; send({ type: "keyframe" }); }
    } else if (kind === KIND_JPEG) {
      createImageBitmap(new Blob([payload], { type: "image/jpeg" })).then((bmp) => {
        if (index >= drawnIndex) vctx.drawImage(bmp, 0, 0, video.width, video.height); // never over a newer picture
        bmp.close();
        S.decoded++;
        frameDrawn(captureMs, index, "jpeg");
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

  // -- the action log -------------------------------------------------------------------------------------------
  const fmt = (v) => (typeof v === "number" ? v.toFixed(3) : String(v));
  function describe(a) {
    const at = a.x !== undefined ? ` (${fmt(a.x)}, ${fmt(a.y)})` : "";
    switch (a.type) {
      case "click": return `click ${a.button || "left"}${a.count > 1 ? " ×" + a.count : ""}${at}`;
      case "mouse_down": case "mouse_up": return `${a.type} ${a.button || "left"}${at}`;
      case "drag": return `drag${at} → (${fmt(a.x2)}, ${fmt(a.y2)})`;
      case "scroll": return `scroll ${a.dx ? "dx " + a.dx + " " : ""}${a.dy ? "dy " + a.dy : ""}${at}`;
      case "key": return `key ${a.keys}`;
      case "type": return `type ${a.text.startsWith("<") ? a.text : JSON.stringify(a.text)}`;
      case "wait": return `wait ${a.seconds} s`;
      case "move": return `move${at}`;
      default: return a.type || "?";
    }
  }

  function logEntry(who, text, cls) {
    const last = S.log[0];
    if (last && last.who === who && last.text.startsWith("move") && text.startsWith("move")) {
      last.text = text; last.n++; // a stream of moves is one line
    } else {
      S.log.unshift({ who, text, cls, n: 1, at: new Date() });
      if (S.log.length > LOG_MAX) S.log.pop();
    }
    renderLog();
  }

  let logQueued = false;
  function renderLog() {
    if (logQueued) return;
    logQueued = true;
    requestAnimationFrame(() => {
      logQueued = false;
      const ul = $("log");
      ul.replaceChildren(...S.log.map((e) => {
        const li = document.createElement("li");
        li.className = e.cls || "";
        li.textContent = `${e.at.toTimeString().slice(0, 8)} ${e.who}: ${e.text}${e.n > 1 ? ` (${e.n})` : ""}`;
        li.title = li.textContent;
        return li;
      }));
    });
  }

  function who(client) {
    if (client === 0) return "policy";
    return S.hello && client === S.hello.client ? "you" : `client ${client}`;
  }

  // -- takeover: pointer and keyboard to the desktop (controller token only) -----------------------------------
  const BUTTONS = ["left", "middle", "right"];
  const NAMED = { Enter: "enter", Tab: "tab", Backspace: "backspace", Delete: "delete", Escape: "escape",
    Insert: "insert", Home: "home", End: "end", PageUp: "pageup", PageDown: "pagedown", ArrowUp: "up",
    ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right", CapsLock: "capslock", NumLock: "numlock",
    ScrollLock: "scrolllock", PrintScreen: "printscreen", Pause: "pause", ContextMenu: "menu",
    AudioVolumeUp: "volumeup", AudioVolumeDown: "volumedown", AudioVolumeMute: "volumemute", " ": "space" };
  const CODES = { Minus: "-", Equal: "=", BracketLeft: "[", BracketRight: "]", Backslash: "\\", Semicolon: ";",
    Quote: "'", Comma: ",", Period: ".", Slash: "/", Backquote: "`", Space: "space" };
  const MODIFIER_KEYS = new Set(["Control", "Shift", "Alt", "Meta", "AltGraph", "OS", "Hyper", "Super", "Fn"]);
  let actionId = 0, lastPos = [0.5, 0.5], moveTimer = null, lastMoveAt = 0, pendingMove = null;
  let wheel = [0, 0], wheelTimer = null, typed = "", typeTimer = null, pausedByTakeover = false;
  const held = new Set();

  function act(action) {
    if (!S.takeover && action.type !== "mouse_up") return false;
    return send({ type: "action", id: `a${++actionId}`, action });
  }

  function pos(ev) {
    const r = video.getBoundingClientRect();
    const c = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1e6) / 1e6;
    return [c((ev.clientX - r.left) / r.width), c((ev.clientY - r.top) / r.height)];
  }

  function flushTyped() {
    clearTimeout(typeTimer); typeTimer = null;
    if (typed) { act({ type: "type", text: typed }); typed = ""; }
  }
  function flushMove() {
    clearTimeout(moveTimer); moveTimer = null;
    if (pendingMove) { lastMoveAt = performance.now(); act({ type: "move", x: pendingMove[0], y: pendingMove[1] }); }
    pendingMove = null;
  }
  function flushWheel() {
    clearTimeout(wheelTimer); wheelTimer = null;
    const dx = Math.trunc(wheel[0]), dy = Math.trunc(wheel[1]);
    wheel = [wheel[0] - dx, wheel[1] - dy];
    if (dx || dy) act({ type: "scroll", x: lastPos[0], y: lastPos[1],
                        dx: Math.max(-100, Math.min(100, dx)), dy: Math.max(-100, Math.min(100, dy)) });
  }
  function beforeOther() { flushTyped(); clearTimeout(moveTimer); moveTimer = null; pendingMove = null; }

  // Every button this page pressed is let go (takeover off, focus lost, page hidden or closed).
  function releaseHeld() {
    flushTyped();
    for (const b of held) send({ type: "action", id: `a${++actionId}`, action: { type: "mouse_up", x: lastPos[0], y: lastPos[1], button: b } });
    held.clear();
    S.held = [];
  }

  function setTakeover(on) {
    if (S.role !== "controller") return;
    on = Boolean(on);
    if (!on) releaseHeld();
    S.takeover = on;
    wrap.classList.toggle("takeover", on);
    $("takeover").classList.toggle("on", on);
    $("takeover").textContent = on ? "Hand back" : "Take over";
    const p = S.policy;
    if (on) {
      video.focus();
      if (p && p.running && !p.paused) { pausedByTakeover = true; send({ type: "policy", id: "takeover", paused: true }); }
    } else if (pausedByTakeover) {
      pausedByTakeover = false;
      if (p && p.running && p.paused) send({ type: "policy", id: "handback", paused: false });
    }
  }
  S.setTakeover = setTakeover;

  video.addEventListener("pointerdown", (ev) => {
    if (!S.takeover) return;
    ev.preventDefault();
    video.focus();
    const button = BUTTONS[ev.button];
    if (!button) return;
    beforeOther();
    lastPos = pos(ev);
    try { video.setPointerCapture(ev.pointerId); } catch (e) {}
    if (act({ type: "mouse_down", x: lastPos[0], y: lastPos[1], button })) { held.add(button); S.held = [...held]; }
  });
  video.addEventListener("pointermove", (ev) => {
    if (!S.takeover) return;
    lastPos = pos(ev);
    pendingMove = lastPos;
    if (!moveTimer) moveTimer = setTimeout(flushMove, Math.max(0, MOVE_MS - (performance.now() - lastMoveAt)));
  });
  video.addEventListener("pointerup", (ev) => {
    const button = BUTTONS[ev.button];
    if (!button || !held.has(button)) return;
    ev.preventDefault();
    beforeOther();
    lastPos = pos(ev);
    held.delete(button); S.held = [...held];
    send({ type: "action", id: `a${++actionId}`, action: { type: "mouse_up", x: lastPos[0], y: lastPos[1], button } });
  });
  video.addEventListener("pointercancel", releaseHeld);
  video.addEventListener("contextmenu", (ev) => { if (S.takeover) ev.preventDefault(); });
  video.addEventListener("wheel", (ev) => {
    if (!S.takeover) return;
    ev.preventDefault();
    flushTyped();
    lastPos = pos(ev);
    const per = ev.deltaMode === 1 ? 3 : ev.deltaMode === 2 ? 0.1 : 100; // one notch: 100 px, 3 lines
    wheel = [wheel[0] + ev.deltaX / per, wheel[1] + ev.deltaY / per];
    if (!wheelTimer) wheelTimer = setTimeout(flushWheel, MOVE_MS);
  }, { passive: false });

  video.addEventListener("keydown", (ev) => {
    if (!S.takeover || ev.isComposing || MODIFIER_KEYS.has(ev.key)) return;
    const altGr = ev.getModifierState && ev.getModifierState("AltGraph");
    if (ev.key.length === 1 && ((!ev.ctrlKey && !ev.altKey && !ev.metaKey) || altGr)) {
      ev.preventDefault();
      typed += ev.key; // printable text, as the person's keyboard layout gives it
      if (typed.length >= 200) flushTyped();
      else if (!typeTimer) typeTimer = setTimeout(flushTyped, TYPE_MS);
      return;
    }
    let base = NAMED[ev.key] || (/^F([1-9]|1[0-9]|2[0-4])$/.test(ev.key) ? ev.key.toLowerCase() : null);
    if (!base && ev.key.length === 1) { // a shortcut: the physical key, whatever the shift state makes of it
      const m = /^(?:Key([A-Z])|Digit([0-9]))$/.exec(ev.code);
      base = m ? (m[1] || m[2]).toLowerCase() : CODES[ev.code] || null;
    }
    if (!base) return;
    ev.preventDefault();
    const mods = [ev.ctrlKey && "ctrl", ev.altKey && "alt", ev.shiftKey && "shift", ev.metaKey && "meta"].filter(Boolean);
    beforeOther();
    act({ type: "key", keys: [...mods, base].join("+") });
  });

  window.addEventListener("blur", releaseHeld);
  document.addEventListener("visibilitychange", () => { if (document.hidden) releaseHeld(); });
  window.addEventListener("pagehide", releaseHeld);

  // -- controls ---------------------------------------------------------------------------------------------
  function showPolicy() { // the policy's state for everyone; its switches for a controller
    const p = S.policy;
    $("policy-status").hidden = !p;
    if (p) {
      $("policy-name").textContent = p.name;
      $("policy-state").textContent = !p.running ? `stopped (${p.reason})` : p.paused ? "paused" : "running";
    }
    if (S.role !== "controller") return;
    $("policy-box").hidden = !p;
    $("instruction-form").hidden = !p;
    if (!p) return;
    $("pause").textContent = p.paused ? "Resume" : "Pause";
    $("pause").disabled = !p.running;
    const input = $("instruction-input");
    input.disabled = !p.running;
    if (document.activeElement !== input) input.value = p.instruction || "";
  }

  function setupControls() {
    const controls = $("controls");
    if (S.role !== "controller") { controls.remove(); showPolicy(); return; } // watch-only: no controls at all
    controls.hidden = false;
    $("takeover").addEventListener("click", () => setTakeover(!S.takeover));
    $("pause").addEventListener("click", () => {
      if (!S.policy) return;
      pausedByTakeover = false; // the person decides now
      send({ type: "policy", id: "pause", paused: !S.policy.paused });
    });
    $("instruction-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      send({ type: "policy", id: "instruction", instruction: $("instruction-input").value });
      $("instruction-input").blur();
    });
    showPolicy();
  }

  // -- messages ---------------------------------------------------------------------------------------------
  async function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.type === "hello") {
      S.hello = msg;
      if (msg.protocol !== PROTOCOL) { status(`protocol ${msg.protocol} unsupported`, true); ws.close(); return; }
      S.role = msg.role;
      S.policy = msg.policy || null;
      screen = msg.screen;
      sizeCanvases(screen.width, screen.height);
      const v = msg.video;
      content = v ? { w: v.content_width, h: v.content_height } : { w: screen.width, h: screen.height };
      S.cursor = msg.desktop && msg.desktop.cursor;
      $("instruction").textContent = (msg.desktop && msg.desktop.instruction) || "";
      setupControls();
      send({ type: "stats" });
      status(`${msg.role} · ${screen.width}×${screen.height}@${screen.scale}`);
      // JPEG pictures from the start (connected with format=jpeg): the desktop shows while the decoder is set up
      const ok = await setupVideo(v);
      S.mode = ok ? "video" : "jpeg";
      $("mode").textContent = ok ? `${S.mode} ${v.codec_string}` : "jpeg";
      if (ok) send({ type: "subscribe", format: "video" });
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
      const w = who(msg.client);
      logEntry(w, describe(a), w === "you" ? "you" : w === "policy" ? "policy" : "");
    } else if (msg.type === "state") {
      if (msg.cursor) S.cursor = msg.cursor;
      if (msg.instruction !== undefined) $("instruction").textContent = msg.instruction +
        (msg.finished ? (msg.success ? " — done ✓" : " — ended") : "");
    } else if (msg.type === "policy") {
      const before = S.policy;
      S.policy = msg.policy;
      if (msg.policy && before && msg.policy.paused !== before.paused) logEntry(who(msg.client === undefined ? S.hello.client : msg.client), msg.policy.paused ? "paused the policy" : "resumed the policy");
      if (msg.policy && before && msg.policy.instruction !== before.instruction) logEntry(who(msg.client === undefined ? S.hello.client : msg.client), `instruction ${JSON.stringify(msg.policy.instruction || "(the task's)")}`);
      if (msg.policy && !msg.policy.running && before && before.running) logEntry("policy", `stopped: ${msg.policy.reason}`, "policy");
      showPolicy();
    } else if (msg.type === "stats") {
      S.stats = msg;
      const st = msg.stages || {};
      const cap = st.capture ? st.capture.p50_ms : 0, enc = st.encode ? st.encode.p50_ms : 0;
      $("server").textContent = `capture ${cap.toFixed(1)} ms · encode ${enc.toFixed(1)} ms · ` +
        `${msg.clients ? msg.clients.length : 0} clients`;
    } else if (msg.type === "error") {
      S.errors.push(`${msg.field}: ${msg.message}`);
      if (msg.id !== undefined || msg.field === "role" || msg.field === "policy") logEntry("server", `refused: ${msg.field}: ${msg.message}`, "bad");
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws?format=jpeg&token=${encodeURIComponent(token)}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => { if (typeof ev.data === "string") onText(ev.data); else onFrame(ev.data); };
    ws.onclose = (ev) => {
      S.closed = ev.code;
      if (S.takeover) setTakeover(false); // the server has released what this page held
      status(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`, true);
    };
    ws.onerror = () => status("connection failed (token?)", true);
  }

  if (!token) status("add #token=… to the address", true);
  connect();
  requestAnimationFrame(drawOverlay);
})();
