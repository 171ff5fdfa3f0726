// voicelab browser client: calls the agent through the signaling server.
// Plain ES2017, no build step. Protocol: see voicelab/webrtc/signaling.py.
//
// Everything a headless test needs is in window.voicelab:
//   state     "idle" | "token" | "media" | "gathering" | "signaling" | "connecting" |
//             "connected" | "closed" | "failed"
//   stats     latest flattened getStats() figures (see flattenStats) or null
//   history   every stats snapshot taken (for "getStats over time")
//   error     null or a one-line message
//   timeline  {name: ms since page start (performance.now())}: page, token, media,
//             offer_sent, answer_received, ice_connected, connected, closed
//   events    [{t, kind, detail}] log entries
//   done      true once the call has ended
//   params    the options read from the URL
//   calls     one entry per finished call: {state, error, timeline, stats}
//   start(), hangup(reason)
// After a call ends (closed or failed) the Call button places a new call: the page's
// per-call state (timeline, stats, error, done) starts again from scratch.
(function () {
  "use strict";

  const q = new URLSearchParams(window.location.search);
  const flag = (name, dflt) => {
    const v = q.get(name);
    if (v === null) return dflt;
    return v === "" || v === "1" || v.toLowerCase() === "true" || v.toLowerCase() === "on";
  };
  const num = (name, dflt) => {
    const v = q.get(name);
    if (v === null || v === "") return dflt;
    const n = Number(v);
    return Number.isFinite(n) && n >= 0 ? n : dflt;
  };

  const vl = {
    state: "idle",
    stats: null,
    history: [],
    error: null,
    timeline: {},
    events: [],
    done: false,
    params: {},
    calls: [],
    start: start,
    hangup: hangup,
  };
  window.voicelab = vl;

  const $ = (id) => document.getElementById(id);
  let pc = null;
  let ws = null;
  let localStream = null;
  let statsTimer = null;
  let hangupTimer = null;
  let ended = false;
  let callNo = 0; // handlers of an earlier call's socket and peer connection check it

  function mark(name) {
    if (!(name in vl.timeline)) vl.timeline[name] = performance.now();
  }
  function logEvent(kind, detail) {
    const t = performance.now();
    vl.events.push({ t: t, kind: kind, detail: detail === undefined ? null : detail });
    const line = (t / 1000).toFixed(3) + " s  " + kind + (detail === undefined ? "" : "  " + JSON.stringify(detail));
    const box = $("log");
    if (box) {
      box.textContent += line + "\n";
      box.scrollTop = box.scrollHeight;
    }
  }
  function setState(s) {
    if (vl.state === s) return;
    vl.state = s;
    const el = $("state");
    if (el) el.textContent = s;
    logEvent("state", s);
  }
  function fail(message) {
    if (vl.error === null) vl.error = String(message);
    const el = $("error");
    if (el) el.textContent = vl.error;
    logEvent("error", String(message));
    hangup("error", "failed");
  }

  // -- options from the URL ----------------------------------------------------------
  function readParams() {
    let iceServers = [];
    const raw = q.get("iceServers");
    if (raw !== null && raw !== "") {
      iceServers = JSON.parse(raw); // a SyntaxError is reported by start()
      if (!Array.isArray(iceServers)) throw new Error("iceServers must be a JSON array of RTCIceServer objects");
    }
    return {
      autostart: flag("autostart", false),
      echoCancellation: flag("echoCancellation", false),
      noiseSuppression: flag("noiseSuppression", false),
      autoGainControl: flag("autoGainControl", false),
      iceServers: iceServers,
      relayOnly: flag("relayOnly", false),
      seconds: num("seconds", null),
      trickle: flag("trickle", false),
      statsIntervalMs: Math.max(100, num("statsIntervalMs", 500)),
      gatherTimeoutMs: Math.max(100, num("gatherTimeoutMs", 5000)),
    };
  }

  // -- getStats ----------------------------------------------------------------------
  function flattenStats(report) {
    const out = { t: performance.now() };
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pairId = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      if (s.type === "transport" && s.dtlsState) out.dtlsState = s.dtlsState;
    });
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && (s.kind === "audio" || s.mediaType === "audio")) {
        out.jitter = s.jitter; // seconds
        out.packetsLost = s.packetsLost;
        out.packetsReceived = s.packetsReceived;
        out.bytesReceived = s.bytesReceived;
        out.concealedSamples = s.concealedSamples;
        out.totalSamplesReceived = s.totalSamplesReceived;
        if (s.jitterBufferEmittedCount) out.jitterBufferDelayMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
      } else if (s.type === "outbound-rtp" && (s.kind === "audio" || s.mediaType === "audio")) {
        out.packetsSent = s.packetsSent;
        out.bytesSent = s.bytesSent;
      } else if (s.type === "remote-inbound-rtp") {
        out.roundTripTime = s.roundTripTime; // seconds (RTCP)
        out.remoteJitter = s.jitter;
        out.remotePacketsLost = s.packetsLost;
        out.remoteFractionLost = s.fractionLost;
      } else if (s.type === "candidate-pair" && pairId === null && s.nominated && s.state === "succeeded") {
        pairId = s.id;
      }
    });
    const pair = pairId ? byId.get(pairId) : null;
    if (pair) {
      out.currentRoundTripTime = pair.currentRoundTripTime; // seconds (STUN)
      out.pairBytesSent = pair.bytesSent;
      out.pairBytesReceived = pair.bytesReceived;
      const l = byId.get(pair.localCandidateId);
      const r = byId.get(pair.remoteCandidateId);
      if (l) out.localCandidateType = l.candidateType;
      if (r) out.remoteCandidateType = r.candidateType;
    }
    if (out.roundTripTime === undefined && out.currentRoundTripTime !== undefined) out.roundTripTime = out.currentRoundTripTime;
    return out;
  }

  const STAT_ROWS = [
    ["jitter", "jitter (ms)", (v) => (v * 1000).toFixed(1)],
    ["packetsLost", "packets lost", String],
    ["packetsReceived", "packets received", String],
    ["roundTripTime", "round trip (ms)", (v) => (v * 1000).toFixed(1)],
    ["bytesReceived", "bytes received", String],
    ["bytesSent", "bytes sent", String],
    ["jitterBufferDelayMs", "jitter buffer (ms)", (v) => v.toFixed(1)],
    ["localCandidateType", "local candidate", String],
    ["remoteCandidateType", "remote candidate", String],
  ];
  function renderStats(st) {
    const body = $("stats-body");
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const [key, label, fmt] of STAT_ROWS) {
      const tr = document.createElement("tr");
      const th = document.createElement("td");
      th.textContent = label;
      const td = document.createElement("td");
      td.className = "num";
      td.id = "stat-" + key;
      td.textContent = st[key] === undefined || st[key] === null ? "-" : fmt(st[key]);
      tr.appendChild(th);
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }
  async function pollStats() {
    if (!pc) return;
    try {
      const st = flattenStats(await pc.getStats());
      vl.stats = st;
      vl.history.push(st);
      renderStats(st);
    } catch (e) {
      logEvent("stats_error", String(e));
    }
  }

  // -- signaling ---------------------------------------------------------------------
  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }
  function waitGathering(timeoutMs) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve(true);
      const timer = setTimeout(() => {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve(false);
      }, timeoutMs);
      function check() {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          pc.removeEventListener("icegatheringstatechange", check);
          resolve(true);
        }
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }
  function openSocket(token) {
    return new Promise((resolve, reject) => {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const sock = new WebSocket(scheme + "//" + window.location.host + "/ws?token=" + encodeURIComponent(token));
      sock.onopen = () => resolve(sock);
      sock.onerror = () => reject(new Error("signaling WebSocket refused or failed (token, origin or server)"));
    });
  }
  async function onMessage(ev) {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      logEvent("bad_message", String(ev.data).slice(0, 80));
      return;
    }
    logEvent("recv", msg.type);
    try {
      if (msg.type === "answer") {
        mark("answer_received");
        await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        setState(pc.connectionState === "connected" ? "connected" : "connecting");
      } else if (msg.type === "candidate") {
        if (msg.candidate) await pc.addIceCandidate(msg.candidate);
        else await pc.addIceCandidate();
      } else if (msg.type === "bye") {
        hangup("remote bye");
      } else if (msg.type === "error") {
        if (vl.state === "connected") logEvent("server_error", msg.code + ": " + msg.message);
        else fail("signaling error " + msg.code + ": " + msg.message);
      }
    } catch (e) {
      fail("handling " + msg.type + ": " + e);
    }
  }

  // -- the call ----------------------------------------------------------------------
  function resetCall() {
    ended = false;
    pc = null;
    ws = null;
    localStream = null;
    statsTimer = null;
    hangupTimer = null;
    vl.stats = null;
    vl.history = [];
    vl.error = null;
    vl.done = false;
    vl.timeline = { page: vl.timeline.page };
    const el = $("error");
    if (el) el.textContent = "";
    renderStats({});
  }

  async function start() {
    if (vl.state !== "idle" && vl.state !== "closed" && vl.state !== "failed") return;
    if (vl.state !== "idle") resetCall();
    const me = ++callNo;
    const current = () => me === callNo && !ended;
    $("call").disabled = true;
    $("hangup").disabled = false;
    try {
      const p = readParams();
      vl.params = p;
      $("constraints").textContent =
        "echoCancellation=" + p.echoCancellation + ", noiseSuppression=" + p.noiseSuppression +
        ", autoGainControl=" + p.autoGainControl;

      setState("token");
      const resp = await fetch("/token", { method: "POST", cache: "no-store" });
      if (!resp.ok) throw new Error("token endpoint answered HTTP " + resp.status);
      const tok = await resp.json();
      mark("token");

      setState("media");
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: p.echoCancellation,
          noiseSuppression: p.noiseSuppression,
          autoGainControl: p.autoGainControl,
        },
        video: false,
      });
      if (!current()) {
        stream.getTracks().forEach((t) => t.stop()); // hung up while the microphone opened
        return;
      }
      localStream = stream;
      mark("media");

      pc = new RTCPeerConnection({
        iceServers: p.iceServers,
        iceTransportPolicy: p.relayOnly ? "relay" : "all",
      });
      pc.addEventListener("track", (ev) => {
        if (!current()) return;
        const audio = $("remote");
        audio.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
        const played = audio.play();
        if (played && played.catch) played.catch((e) => logEvent("autoplay_blocked", String(e)));
        logEvent("remote_track", ev.track.kind);
      });
      pc.addEventListener("iceconnectionstatechange", () => {
        logEvent("ice", pc.iceConnectionState);
        if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") mark("ice_connected");
      });
      pc.addEventListener("connectionstatechange", () => {
        if (!current()) return;
        const s = pc.connectionState;
        logEvent("connection", s);
        if (s === "connected") {
          mark("connected");
          setState("connected");
          if (p.seconds !== null && hangupTimer === null) {
            hangupTimer = setTimeout(() => hangup("seconds elapsed"), p.seconds * 1000);
          }
        } else if (s === "failed") {
          fail("peer connection failed (ICE or DTLS)");
        }
      });
      pc.addEventListener("icecandidate", (ev) => {
        if (!p.trickle || vl.timeline.offer_sent === undefined) return;
        send({ type: "candidate", candidate: ev.candidate ? ev.candidate.toJSON() : null });
      });
      for (const track of localStream.getAudioTracks()) pc.addTrack(track, localStream);

      const sock = await openSocket(tok.token);
      if (!current()) {
        sock.close(1000, "bye");
        return;
      }
      ws = sock;
      ws.onmessage = (ev) => {
        if (current()) onMessage(ev);
      };
      ws.onclose = (ev) => {
        logEvent("ws_closed", { code: ev.code, reason: ev.reason });
        if (current()) {
          if (vl.state === "connected" || ev.code === 1000) hangup("signaling closed " + ev.code);
          else fail("signaling closed with code " + ev.code + (ev.reason ? " (" + ev.reason + ")" : ""));
        }
      };
      mark("ws_open");

      setState("gathering");
      await pc.setLocalDescription(await pc.createOffer());
      if (!p.trickle) {
        const complete = await waitGathering(p.gatherTimeoutMs);
        mark("gathered");
        if (!complete) logEvent("gathering_timeout", p.gatherTimeoutMs);
      }
      if (!current()) return;
      setState("signaling");
      send({ type: "offer", sdp: pc.localDescription.sdp });
      mark("offer_sent");
      statsTimer = setInterval(pollStats, p.statsIntervalMs);
    } catch (e) {
      if (me === callNo) fail(e && e.message ? e.message : String(e));
    }
  }

  function hangup(reason, finalState) {
    if (ended) return;
    ended = true;
    logEvent("hangup", reason || "user");
    if (statsTimer !== null) clearInterval(statsTimer);
    if (hangupTimer !== null) clearTimeout(hangupTimer);
    statsTimer = null;
    hangupTimer = null;
    $("hangup").disabled = true;
    const finish = () => {
      send({ type: "bye" });
      if (ws) ws.close(1000, "bye");
      if (pc) pc.close();
      if (localStream) localStream.getTracks().forEach((t) => t.stop());
      mark("closed");
      setState(finalState || "closed");
      vl.calls.push({ state: vl.state, error: vl.error, timeline: Object.assign({}, vl.timeline), stats: vl.stats });
      vl.done = true;
      $("call").disabled = false; // ready for the next call
      $("hangup").disabled = true;
    };
    // Take one last stats snapshot so the final numbers cover the whole call.
    if (pc && pc.connectionState !== "closed") pollStats().then(finish, finish);
    else finish();
  }

  mark("page");
  function init() {
    $("call").addEventListener("click", () => start());
    $("hangup").addEventListener("click", () => hangup("user"));
    renderStats({});
    let auto = false;
    try {
      auto = readParams().autostart;
    } catch (e) {
      auto = true; // start() reports the bad option
    }
    if (auto) start();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
