// The agent console at `/console`. A member of staff signs in with their staff
// key; the list comes from `GET /console/api/conversations` and stays current
// through the tenant's feed (`/console/ws`). Opening a conversation loads its
// history and attaches to its socket as staff: the visitor's presence frames
// show them, and messages sent on that socket are answers in their name.
// "Insights" shows the tenant's statistics (insights.js); an open
// conversation shows its own insights beside the transcript.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const log = window.tertuliaChat.transcript($("log"));
  let staffKey = sessionStorage.getItem("tertulia.staffKey") || "";
  let me = null, feed = null, chat = null, openId = null, human = null;
  const rows = new Map();      // session_id -> summary

  function raw(path, options = {}) {
    const headers = Object.assign({ "X-API-Key": staffKey }, options.body ? { "Content-Type": "application/json" } : {});
    return fetch(path, Object.assign({}, options, { headers }));
  }
  function api(path, options = {}) {
    return raw(path, options).then(async (r) => {
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(`${body.error || "the server answered " + r.status} (${body.code || r.status})`);
      return body;
    });
  }
  function status(text) { $("status").textContent = text; }

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
  function showAttendance(who) {
    human = who || null;
    const mine = human && me && human.key_id === me.key_id;
    $("takeover").hidden = !!human;
    $("handback").hidden = !mine;
    $("text").disabled = !mine; $("send").disabled = !mine;
    $("text").placeholder = mine ? "Answer as " + me.name : human ? `${human.name} is answering` : "Take over to answer";
  }
  // The frames only the console shows; the transcript draws the rest.
  function onChatFrame(frame) {
    switch (frame.type) {
      case "presence": {
        const parts = [`${frame.visitors} visitor${frame.visitors === 1 ? "" : "s"} connected`];
        if (frame.staff.length) parts.push("staff: " + frame.staff.join(", "));
        parts.push(frame.agent.kind === "human" ? `${frame.agent.name} is answering` : "the AI is answering");
        if (frame.handoff_requested) parts.push("a person was asked for");
        $("presence").textContent = parts.join(" · ");
        return true;
      }
      case "typing": $("presence").dataset.typing = "1"; return true;
      case "error": log.note("error", `${frame.content} (${frame.code})`); return true;
      case "system": return true;
      default: return false;
    }
  }
  async function open(id) {
    if (chat) { chat.close(); chat = null; }
    openId = id;
    log.clear();
    drawList();
    const body = await api(`/console/api/conversations/${id}/messages`);
    $("title").textContent = label(body.conversation);
    showAttendance(body.conversation.human);
    for (const m of body.messages) log.show(m);
    $("insight").hidden = false;
    window.tertuliaInsights.panel($("insight"), api, id);
    // A staff ticket for the conversation's own socket, asked again on every reconnect.
    const url = () => api(`/console/api/conversations/${id}/socket`, { method: "POST" }).then((r) => r.websocket_url);
    chat = window.tertuliaChat.connect({ url, transcript: log, onFrame: onChatFrame, maxDelay: 1000 });
    chat.open(true);
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
    if (!content || !chat || !chat.isOpen()) return;
    chat.send(log.outgoing(content, "assistant", me.name));
    $("text").value = "";
  };
  $("text").oninput = () => chat && chat.send({ type: "typing" });

  const insights = window.tertuliaInsights.view({ root: $("insights"), api, raw });
  $("show-insights").onclick = () => {
    const showing = $("insights").hidden;
    $("insights").hidden = !showing;
    document.querySelector(".app").hidden = showing;
    $("show-insights").textContent = showing ? "Conversations" : "Insights";
    if (showing) insights.load();
  };

  async function signIn() {
    try {
      me = await api("/console/api/me");
      sessionStorage.setItem("tertulia.staffKey", staffKey);
      $("me").textContent = `${me.name} · ${me.tenant}`;
      $("signin").hidden = true;
      $("show-insights").hidden = false;
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
