// What the demo page, the agent console and the widget share: a transcript
// (message bubbles rendered by tertuliaMarkdown, answers drawn as their
// chunks stream in, our own messages kept until acknowledged) and a socket
// that reconnects by itself, resuming after the last `seq` it saw and
// re-sending every unacknowledged message under its `client_msg_id`, so the
// server stores it once. Each page handles the frames only it cares about
// (greeting, presence, typing, errors) and hands the rest to the transcript.
"use strict";
(function () {
  const md = window.tertuliaMarkdown;

  // A random UUID (v4): a message's `client_msg_id`, a visitor's session id.
  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // The messages of one conversation, drawn into `log`.
  function transcript(log) {
    const streaming = new Map(); // message_id -> bubble of an answer being streamed
    const pending = new Map();   // client_msg_id -> {content, el}, sent but not acknowledged
    const state = { lastSeq: 0 };

    function scroll() { log.scrollTop = log.scrollHeight; }
    function seen(seq) { if (seq > state.lastSeq) state.lastSeq = seq; }
    function byId(id) { return log.querySelector(`[data-id="${CSS.escape(id)}"]`); }
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
      if (options.status === "interrupted") el.classList.add("interrupted");
      log.appendChild(el);
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
      log.appendChild(el);
      scroll();
    }
    // A stored message (from the history or a `message` frame), once.
    function show(m) {
      seen(m.seq);
      if (byId(m.id)) return null;
      const mine = m.client_msg_id && pending.get(m.client_msg_id);
      if (mine) { // our own message, stored before the connection dropped
        adopt(m.client_msg_id, m.id);
        return null;
      }
      return bubble(m.role, m.content, { id: m.id, author: m.author, status: m.status });
    }
    function adopt(clientId, messageId) {
      const mine = pending.get(clientId);
      if (!mine) return false;
      mine.el.dataset.id = messageId;
      mine.el.classList.remove("pending");
      pending.delete(clientId);
      return true;
    }
    // Draws what a frame says about the messages; false for other frames.
    function apply(frame) {
      switch (frame.type) {
        case "ack": seen(frame.seq); adopt(frame.client_msg_id, frame.message_id); return true;
        case "message": show(frame.message); return true;
        case "chunk": {
          let el = streaming.get(frame.message_id);
          if (!el) { el = bubble("assistant", "", { id: frame.message_id }); streaming.set(frame.message_id, el); }
          setText(el, frame.snapshot ? frame.content : el.dataset.text + frame.content);
          return true;
        }
        case "done": {
          seen(frame.seq);
          const el = streaming.get(frame.message_id) || byId(frame.message_id)
            || bubble("assistant", "", { id: frame.message_id });
          setText(el, frame.content);
          if (frame.status === "interrupted") el.classList.add("interrupted");
          streaming.delete(frame.message_id);
          return true;
        }
        default: return false;
      }
    }
    // Draws a message we send now and keeps it until the server acknowledges it.
    function outgoing(content, role = "user", author) {
      const id = newId();
      const el = bubble(role, content, { author });
      el.classList.add("pending");
      pending.set(id, { content, el });
      return { type: "message", content, client_msg_id: id };
    }
    // After a reconnect: answers cut off by the drop go (the server replays
    // what was stored of them, or streams them again), and every message
    // still unacknowledged is sent again under its own id.
    function resume(send) {
      for (const el of streaming.values()) el.remove();
      streaming.clear();
      for (const [id, mine] of pending) send({ type: "message", content: mine.content, client_msg_id: id });
    }
    function clear() {
      log.replaceChildren();
      streaming.clear();
      pending.clear();
      state.lastSeq = 0;
    }
    return { state, bubble, note, show, apply, outgoing, resume, clear };
  }

  // A socket on `url()` (a promise of its address, asked again on every
  // reconnect: a ticket may have expired) that resumes after the
  // transcript's last seq. `onClose(event)` returns false to stop
  // reconnecting; the pause doubles up to `maxDelay`.
  function connect(options) {
    const { url, transcript, onFrame, onOpen = () => {}, onClose = () => true, maxDelay = 5000 } = options;
    let socket = null, stopped = false, delay = 500;
    function send(frame) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(frame));
      return true;
    }
    async function open(resume) {
      let address;
      try { address = new URL(await url()); } catch (_) { address = null; }
      if (stopped) return;
      if (!address) { setTimeout(() => open(resume), delay); delay = Math.min(delay * 2, maxDelay); return; }
      if (resume) address.searchParams.set("after_seq", String(transcript.state.lastSeq));
      const ws = new WebSocket(address);
      socket = ws;
      ws.onopen = () => { delay = 500; onOpen(); transcript.resume(send); };
      ws.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (!onFrame(frame)) transcript.apply(frame);
      };
      ws.onclose = (event) => {
        if (socket !== ws || stopped) return;
        if (onClose(event) === false) return;
        setTimeout(() => open(true), delay);
        delay = Math.min(delay * 2, maxDelay);
      };
    }
    return {
      open,
      send,
      isOpen: () => !!socket && socket.readyState === WebSocket.OPEN,
      close() { stopped = true; if (socket) socket.close(); socket = null; },
    };
  }

  window.tertuliaChat = { transcript, connect, newId };
})();
