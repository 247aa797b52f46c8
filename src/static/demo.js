// The demo chat at `/`: one conversation on the session API, streamed over its
// socket. It survives a dropped connection or a server restart: it reconnects
// with `after_seq` (the last seq it saw), adopts replayed copies of its own
// messages by `client_msg_id`, and re-sends any message that was never
// acknowledged under the same id, so the server stores it once.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const md = window.tertuliaMarkdown;
  let socket = null, sessionId = null, wsUrl = null, lastSeq = 0;
  let closedOnPurpose = false, greeted = false, retryDelay = 500, agentName = null;
  let typingTimer = null, lastTypingSent = 0;
  const streaming = new Map(); // message_id -> bubble of an answer being streamed
  const pending = new Map();   // client_msg_id -> {content, el}, sent but not acknowledged

  function uid() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function key() { return $("key").value.trim(); }
  function status(text) { $("status").textContent = text; }
  function ready(on) { for (const id of ["text", "send", "stop", "person"]) $(id).disabled = !on; }
  function seen(seq) { if (seq > lastSeq) lastSeq = seq; }
  function scroll() { $("log").scrollTop = $("log").scrollHeight; }
  function byId(id) { return $("log").querySelector(`[data-id="${CSS.escape(id)}"]`); }

  function bubble(role, text, options = {}) {
    const el = document.createElement("div");
    el.className = "msg " + role;
    if (options.id) el.dataset.id = options.id;
    if (options.author && role === "assistant") {
      el.classList.add("human");
      const author = document.createElement("span");
      author.className = "author";
      author.textContent = options.author;
      el.appendChild(author);
    }
    const body = document.createElement("div");
    body.className = "body";
    el.appendChild(body);
    el.dataset.text = text;
    md.render(text, body);
    $("log").appendChild(el);
    scroll();
    return el;
  }
  function setText(el, text) {
    el.dataset.text = text;
    md.render(text, el.querySelector(".body"));
    scroll();
  }
  function note(kind, text) {
    const el = document.createElement("div");
    el.className = kind;
    el.textContent = text;
    $("log").appendChild(el);
    scroll();
  }
  function typing(text) {
    clearTimeout(typingTimer);
    $("typing").textContent = text || "";
    if (text) typingTimer = setTimeout(() => { $("typing").textContent = ""; }, 4000);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "system":
        if (!greeted) { note("system", frame.content); greeted = true; }
        break;
      case "ack": {
        seen(frame.seq);
        const mine = pending.get(frame.client_msg_id);
        if (mine) {
          mine.el.dataset.id = frame.message_id;
          mine.el.classList.remove("pending");
          pending.delete(frame.client_msg_id);
        }
        if (!agentName) typing("The assistant is typing…");
        break;
      }
      case "message": {
        const m = frame.message;
        seen(m.seq);
        if (byId(m.id)) break;
        const mine = m.client_msg_id && pending.get(m.client_msg_id);
        if (mine) { // our own message, stored before the connection dropped
          mine.el.dataset.id = m.id;
          mine.el.classList.remove("pending");
          pending.delete(m.client_msg_id);
          break;
        }
        const el = bubble(m.role, m.content, { id: m.id, author: m.author });
        if (m.status === "interrupted") el.classList.add("interrupted");
        if (m.role === "assistant") typing("");
        break;
      }
      case "chunk": {
        typing("");
        let el = streaming.get(frame.message_id);
        if (!el) { el = bubble("assistant", "", { id: frame.message_id }); streaming.set(frame.message_id, el); }
        setText(el, frame.snapshot ? frame.content : el.dataset.text + frame.content);
        break;
      }
      case "done": {
        seen(frame.seq);
        typing("");
        const el = streaming.get(frame.message_id) || byId(frame.message_id)
          || bubble("assistant", "", { id: frame.message_id });
        setText(el, frame.content);
        if (frame.status === "interrupted") el.classList.add("interrupted");
        streaming.delete(frame.message_id);
        break;
      }
      case "typing":
        typing((agentName || "Someone") + " is typing…");
        break;
      case "presence": {
        agentName = frame.agent.kind === "human" ? frame.agent.name : null;
        const parts = [agentName ? `${agentName} (a person) is answering` : "The AI assistant is answering"];
        if (frame.handoff_requested) parts.push("a person has been asked to join");
        $("presence").textContent = parts.join(" · ");
        break;
      }
      case "error":
        typing("");
        note("error", `${frame.content} (${frame.code})`);
        break;
    }
  }

  function connect(resume) {
    const url = new URL(wsUrl);
    if (resume) url.searchParams.set("after_seq", String(lastSeq));
    const ws = new WebSocket(url);
    socket = ws;
    status("connecting…");
    ws.onopen = () => {
      status("connected");
      retryDelay = 500;
      ready(true);
      // Answers cut off by the drop: the server replays what was stored of
      // them (or streams them again), so the half-drawn bubbles go.
      for (const el of streaming.values()) el.remove();
      streaming.clear();
      for (const [id, mine] of pending) {
        ws.send(JSON.stringify({ type: "message", content: mine.content, client_msg_id: id }));
      }
    };
    ws.onmessage = (event) => onFrame(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (socket !== ws) return;
      ready(false);
      typing("");
      if (closedOnPurpose) return;
      if (event.code === 4004) { status("this conversation was deleted"); return; }
      status(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); reconnecting…`);
      setTimeout(reconnect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 5000);
    };
  }

  async function reconnect() {
    try { // the ticket may have expired: ask for a fresh one
      const r = await fetch(`/chat/sessions/${sessionId}/ticket`, { method: "POST", headers: { "X-API-Key": key() } });
      if (r.ok) wsUrl = (await r.json()).websocket_url;
    } catch (_) { /* the server is still down: the old ticket is tried, and we come back here */ }
    connect(true);
  }

  function reset() {
    if (socket) { closedOnPurpose = true; socket.close(); socket = null; }
    closedOnPurpose = false;
    $("log").replaceChildren(); streaming.clear(); pending.clear();
    lastSeq = 0; greeted = false; agentName = null;
    $("presence").textContent = ""; typing("");
  }

  async function startNew() {
    reset();
    const r = await fetch("/chat/sessions", { method: "POST", headers: { "X-API-Key": key(), "Content-Type": "application/json" }, body: "{}" });
    const body = await r.json().catch(() => ({ error: `the server answered ${r.status}`, code: "http_" + r.status }));
    if (!r.ok) { note("error", `${body.error} (${body.code})`); return; }
    sessionId = body.session_id; wsUrl = body.websocket_url;
    history.replaceState(null, "", "#session=" + sessionId);
    connect(false);
  }

  // Back to the conversation in the address after a reload: history, then the socket.
  async function reopen(id) {
    reset();
    sessionId = id;
    const headers = { "X-API-Key": key() };
    const h = await fetch(`/chat/sessions/${id}/history`, { headers });
    if (!h.ok) { note("error", "that conversation cannot be opened; start a new one"); return; }
    greeted = true;
    for (const m of (await h.json()).history) {
      const el = bubble(m.role, m.content, { id: m.id, author: m.author });
      if (m.status === "interrupted") el.classList.add("interrupted");
      seen(m.seq);
    }
    const t = await fetch(`/chat/sessions/${id}/ticket`, { method: "POST", headers });
    if (!t.ok) { note("error", "cannot connect to that conversation"); return; }
    wsUrl = (await t.json()).websocket_url;
    connect(true);
  }

  $("new").onclick = startNew;
  $("form").onsubmit = (event) => {
    event.preventDefault();
    const content = $("text").value.trim();
    if (!content || !socket || socket.readyState !== WebSocket.OPEN) return;
    const id = uid();
    const el = bubble("user", content);
    el.classList.add("pending");
    pending.set(id, { content, el });
    socket.send(JSON.stringify({ type: "message", content, client_msg_id: id }));
    $("text").value = "";
  };
  $("text").oninput = () => {
    const now = Date.now();
    if (socket && socket.readyState === WebSocket.OPEN && now - lastTypingSent > 2000) {
      lastTypingSent = now;
      socket.send(JSON.stringify({ type: "typing" }));
    }
  };
  $("stop").onclick = () => socket && socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ type: "cancel" }));
  $("person").onclick = async () => {
    const r = await fetch(`/chat/${sessionId}/handoff`, {
      method: "POST", headers: { "X-API-Key": key(), "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "The visitor pressed “Talk to a person”" }),
    });
    if (!r.ok) { const body = await r.json().catch(() => ({})); note("error", `${body.error || r.status} (${body.code || "error"})`); }
  };

  const opened = /^#session=([0-9a-f-]{36})$/.exec(location.hash);
  if (opened && key()) reopen(opened[1]);
})();
