// The agent console at `/console`. A member of staff signs in with their staff
// key; the list comes from `GET /console/api/conversations` and stays current
// through the tenant's feed (`/console/ws`). Opening a conversation loads its
// history and attaches to its socket as staff: the visitor's presence frames
// show them, and messages sent on that socket are answers in their name.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const md = window.tertuliaMarkdown;
  let staffKey = sessionStorage.getItem("tertulia.staffKey") || "";
  let me = null, feed = null, chat = null, openId = null, lastSeq = 0, human = null;
  const rows = new Map();      // session_id -> summary
  const streaming = new Map(); // message_id -> bubble

  function api(path, options = {}) {
    const headers = Object.assign({ "X-API-Key": staffKey }, options.body ? { "Content-Type": "application/json" } : {});
    return fetch(path, Object.assign({}, options, { headers })).then(async (r) => {
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(`${body.error || "the server answered " + r.status} (${body.code || r.status})`);
      return body;
    });
  }
  function status(text) { $("status").textContent = text; }
  function uid() {
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---- the list ----
  function label(c) { return c.title || (c.channel ? `${c.channel} · ` : "") + c.session_id.slice(-8); }
  function drawList() {
    const sorted = [...rows.values()].sort((a, b) =>
      (b.handoff ? 1 : 0) - (a.handoff ? 1 : 0) || String(b.updated_at).localeCompare(String(a.updated_at)));
    $("list").replaceChildren(...sorted.map((c) => {
      const li = document.createElement("li");
      li.dataset.id = c.session_id;
      if (c.handoff) li.classList.add("handoff");
      if (c.session_id === openId) li.classList.add("open");
      const title = document.createElement("div");
      title.textContent = label(c);
      if (c.handoff) { const b = document.createElement("span"); b.className = "badge"; b.textContent = "needs a person"; title.appendChild(b); }
      if (c.human) { const b = document.createElement("span"); b.className = "badge human"; b.textContent = c.human.name; title.appendChild(b); }
      const who = document.createElement("div");
      who.className = "who";
      const visitors = c.presence ? c.presence.visitors : 0;
      who.textContent = (visitors ? "● visitor online · " : "") + c.status;
      if (visitors) who.classList.add("live");
      const last = document.createElement("div");
      last.className = "last";
      last.textContent = c.last_message ? `${c.last_message.author || c.last_message.role}: ${c.last_message.content}` : "";
      li.append(title, who, last);
      li.onclick = () => open(c.session_id);
      return li;
    }));
  }
  async function loadList() {
    const body = await api("/console/api/conversations?limit=100");
    rows.clear();
    for (const c of body.conversations) rows.set(c.session_id, c);
    drawList();
  }
  async function followFeed() {
    const { websocket_url } = await api("/console/api/feed", { method: "POST" });
    const ws = new WebSocket(websocket_url);
    feed = ws;
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "conversation") {
        const known = rows.get(frame.conversation.session_id) || {};
        // A summary from a session that never carried a message keeps the one we know.
        rows.set(frame.conversation.session_id, Object.assign({}, known, frame.conversation,
          { last_message: frame.conversation.last_message || known.last_message }));
        drawList();
        if (frame.conversation.session_id === openId) showAttendance(frame.conversation.human);
      } else if (frame.type === "deleted") {
        rows.delete(frame.session_id);
        drawList();
      } else if (frame.type === "error" && frame.code === "feed_lagged") {
        loadList();
      }
    };
    ws.onclose = () => { if (feed === ws) { status("feed lost; reconnecting…"); setTimeout(() => followFeed().then(loadList).then(() => status("")).catch(() => {}), 2000); } };
  }

  // ---- one conversation ----
  function bubble(m) {
    const el = document.createElement("div");
    el.className = "msg " + m.role;
    if (m.id) el.dataset.id = m.id;
    if (m.author && m.role === "assistant") {
      el.classList.add("human");
      const a = document.createElement("span"); a.className = "author"; a.textContent = m.author; el.appendChild(a);
    }
    const body = document.createElement("div");
    body.className = "body";
    el.appendChild(body);
    el.dataset.text = m.content;
    md.render(m.content, body);
    if (m.status === "interrupted") el.classList.add("interrupted");
    $("log").appendChild(el);
    $("log").scrollTop = $("log").scrollHeight;
    return el;
  }
  function byId(id) { return $("log").querySelector(`[data-id="${CSS.escape(id)}"]`); }
  function showAttendance(who) {
    human = who || null;
    const mine = human && me && human.key_id === me.key_id;
    $("takeover").hidden = !!human;
    $("handback").hidden = !mine;
    $("text").disabled = !mine; $("send").disabled = !mine;
    $("text").placeholder = mine ? "Answer as " + me.name : human ? `${human.name} is answering` : "Take over to answer";
  }
  function onChatFrame(frame) {
    switch (frame.type) {
      case "message": {
        lastSeq = Math.max(lastSeq, frame.message.seq);
        if (!byId(frame.message.id)) bubble(frame.message);
        break;
      }
      case "ack": {
        lastSeq = Math.max(lastSeq, frame.seq);
        const mine = $("log").querySelector(`[data-client="${CSS.escape(frame.client_msg_id || "")}"]`);
        if (mine) mine.dataset.id = frame.message_id;
        break;
      }
      case "chunk": {
        let el = streaming.get(frame.message_id);
        if (!el) { el = bubble({ role: "assistant", content: "", id: frame.message_id }); streaming.set(frame.message_id, el); }
        el.dataset.text = frame.snapshot ? frame.content : el.dataset.text + frame.content;
        md.render(el.dataset.text, el.querySelector(".body"));
        break;
      }
      case "done": {
        lastSeq = Math.max(lastSeq, frame.seq);
        const el = streaming.get(frame.message_id) || byId(frame.message_id) || bubble({ role: "assistant", content: "", id: frame.message_id });
        el.dataset.text = frame.content;
        md.render(frame.content, el.querySelector(".body"));
        if (frame.status === "interrupted") el.classList.add("interrupted");
        streaming.delete(frame.message_id);
        break;
      }
      case "presence": {
        const parts = [`${frame.visitors} visitor${frame.visitors === 1 ? "" : "s"} connected`];
        if (frame.staff.length) parts.push("staff: " + frame.staff.join(", "));
        parts.push(frame.agent.kind === "human" ? `${frame.agent.name} is answering` : "the AI is answering");
        if (frame.handoff_requested) parts.push("a person was asked for");
        $("presence").textContent = parts.join(" · ");
        break;
      }
      case "typing": $("presence").dataset.typing = "1"; break;
      case "error": { const e = document.createElement("div"); e.className = "error"; e.textContent = `${frame.content} (${frame.code})`; $("log").appendChild(e); break; }
    }
  }
  async function open(id) {
    if (chat) { const old = chat; chat = null; old.close(); }
    openId = id; lastSeq = 0; streaming.clear();
    drawList();
    $("log").replaceChildren();
    const body = await api(`/console/api/conversations/${id}/messages`);
    $("title").textContent = label(body.conversation);
    showAttendance(body.conversation.human);
    for (const m of body.messages) { bubble(m); lastSeq = Math.max(lastSeq, m.seq); }
    attach(id);
  }
  async function attach(id) {
    const { websocket_url } = await api(`/console/api/conversations/${id}/socket`, { method: "POST" });
    const url = new URL(websocket_url);
    url.searchParams.set("after_seq", String(lastSeq));
    const ws = new WebSocket(url);
    chat = ws;
    ws.onmessage = (event) => onChatFrame(JSON.parse(event.data));
    ws.onclose = () => { if (chat === ws && openId === id) setTimeout(() => chat === ws && attach(id).catch(() => {}), 1000); };
  }

  $("takeover").onclick = async () => {
    try { await api(`/console/api/conversations/${openId}/takeover`, { method: "POST" }); showAttendance({ name: me.name, key_id: me.key_id }); $("text").focus(); }
    catch (error) { status(error.message); }
  };
  $("handback").onclick = async () => {
    try { await api(`/console/api/conversations/${openId}/handback`, { method: "POST" }); showAttendance(null); }
    catch (error) { status(error.message); }
  };
  $("reply").onsubmit = (event) => {
    event.preventDefault();
    const content = $("text").value.trim();
    if (!content || !chat || chat.readyState !== WebSocket.OPEN) return;
    const id = uid();
    const el = bubble({ role: "assistant", content, author: me.name });
    el.dataset.client = id;
    chat.send(JSON.stringify({ type: "message", content, client_msg_id: id }));
    $("text").value = "";
  };
  $("text").oninput = () => chat && chat.readyState === WebSocket.OPEN && chat.send(JSON.stringify({ type: "typing" }));

  async function signIn() {
    try {
      me = await api("/console/api/me");
      sessionStorage.setItem("tertulia.staffKey", staffKey);
      $("me").textContent = `${me.name} · ${me.tenant}`;
      $("signin").hidden = true;
      status("");
      await loadList();
      await followFeed();
    } catch (error) {
      status(error.message);
    }
  }
  $("signin").onsubmit = (event) => { event.preventDefault(); staffKey = $("key").value.trim(); signIn(); };
  if (staffKey) signIn();
})();
