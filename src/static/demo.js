// The demo chat at `/`: one conversation on the session API, streamed over its
// socket. It survives a dropped connection or a server restart (chat.js
// reconnects after the last seq it saw and re-sends what was never
// acknowledged), and a reload: the conversation is in the address.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const chat = window.tertuliaChat;
  const log = chat.transcript($("log"));
  let socket = null, sessionId = null, wsUrl = null, greeted = false, agentName = null;
  let typingTimer = null, lastTypingSent = 0;

  function key() { return $("key").value.trim(); }
  function status(text) { $("status").textContent = text; }
  // Before any conversation, typing is allowed: the first message starts one.
  function ready(on) {
    for (const id of ["stop", "person"]) $(id).disabled = !on;
    for (const id of ["text", "send"]) $(id).disabled = !on && socket !== null;
  }
  function typing(text) {
    clearTimeout(typingTimer);
    $("typing").textContent = text || "";
    if (text) typingTimer = setTimeout(() => { $("typing").textContent = ""; }, 4000);
  }

  // The frames only this page shows; the transcript draws the rest.
  function onFrame(frame) {
    switch (frame.type) {
      case "system":
        if (!greeted) { log.note("system", frame.content); greeted = true; }
        return true;
      case "ack": if (!agentName) typing("The assistant is typing…"); return false;
      case "message": if (frame.message.role === "assistant") typing(""); return false;
      case "chunk": case "done": typing(""); return false;
      case "typing": typing((agentName || "Someone") + " is typing…"); return true;
      case "presence": {
        agentName = frame.agent.kind === "human" ? frame.agent.name : null;
        const parts = [agentName ? `${agentName} (a person) is answering` : "The AI assistant is answering"];
        if (frame.handoff_requested) parts.push("a person has been asked to join");
        $("presence").textContent = parts.join(" · ");
        return true;
      }
      case "error": typing(""); log.note("error", `${frame.content} (${frame.code})`); return true;
      default: return false;
    }
  }

  // A fresh ticket on every reconnect (the old one may have expired); while
  // the server is down, the old one is tried and we come back here.
  async function socketUrl() {
    try {
      const r = await fetch(`/chat/sessions/${sessionId}/ticket`, { method: "POST", headers: { "X-API-Key": key() } });
      if (r.ok) wsUrl = (await r.json()).websocket_url;
    } catch (_) { /* keep the old one */ }
    return wsUrl;
  }

  function connect(resume) {
    let first = true;
    socket = chat.connect({
      url: () => (first ? (first = false, Promise.resolve(wsUrl)) : socketUrl()),
      transcript: log,
      onFrame,
      onOpen: () => { status("connected"); ready(true); },
      onClose: (event) => {
        ready(false);
        typing("");
        if (event.code === 4004) { status("this conversation was deleted"); return false; }
        status(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); reconnecting…`);
        return true;
      },
    });
    status("connecting…");
    socket.open(resume);
  }

  function reset() {
    if (socket) { socket.close(); socket = null; }
    log.clear();
    greeted = false; agentName = null;
    $("presence").textContent = ""; typing("");
  }

  async function startNew() {
    reset();
    const r = await fetch("/chat/sessions", { method: "POST", headers: { "X-API-Key": key(), "Content-Type": "application/json" }, body: "{}" });
    const body = await r.json().catch(() => ({ error: `the server answered ${r.status}`, code: "http_" + r.status }));
    if (!r.ok) { log.note("error", `${body.error} (${body.code})`); return; }
    sessionId = body.session_id; wsUrl = body.websocket_url;
    history.replaceState(null, "", "#session=" + sessionId);
    connect(false);
  }

  // Back to the conversation in the address after a reload: history, then the socket.
  async function reopen(id) {
    reset();
    sessionId = id;
    const h = await fetch(`/chat/sessions/${id}/history`, { headers: { "X-API-Key": key() } });
    if (!h.ok) { log.note("error", "that conversation cannot be opened; start a new one"); return; }
    greeted = true;
    for (const m of (await h.json()).history) log.show(m);
    if (!(await socketUrl())) { log.note("error", "cannot connect to that conversation"); return; }
    connect(true);
  }

  $("new").onclick = startNew;
  $("form").onsubmit = async (event) => {
    event.preventDefault();
    const content = $("text").value.trim();
    if (!content) return;
    if (!socket) {
      // The first message starts a conversation; it is sent once the socket
      // opens (the transcript sends every unacknowledged message then).
      $("text").value = "";
      await startNew();
      if (socket) socket.send(log.outgoing(content));
      return;
    }
    if (!socket.isOpen()) return;
    socket.send(log.outgoing(content));
    $("text").value = "";
  };
  $("text").oninput = () => {
    const now = Date.now();
    if (socket && socket.isOpen() && now - lastTypingSent > 2000) {
      lastTypingSent = now;
      socket.send({ type: "typing" });
    }
  };
  $("stop").onclick = () => socket && socket.send({ type: "cancel" });
  $("person").onclick = async () => {
    const r = await fetch(`/chat/${sessionId}/handoff`, {
      method: "POST", headers: { "X-API-Key": key(), "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "The visitor pressed “Talk to a person”" }),
    });
    if (!r.ok) { const body = await r.json().catch(() => ({})); log.note("error", `${body.error || r.status} (${body.code || "error"})`); }
  };

  const opened = /^#session=([0-9a-f-]{36})$/.exec(location.hash);
  if (opened && key()) reopen(opened[1]);
  else ready(false);
})();
