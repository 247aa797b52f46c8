// The tertulia chat widget for any landing page:
//
//   <script src="https://chat.example/widget.js" data-key="wk_…" async></script>
//
// Optional: data-title="Ayuda", data-consent-text="…", data-consent-version="v1".
// It draws a bubble and a panel in a shadow root (the page's styles cannot
// reach it), uses the widget key on the webchat surface from the page's own
// origin (which the tenant must allow), asks for consent before the visitor
// can write (personal data may follow) and records the answer through
// /api/webchat/consent, and sends the browser's locale. The visitor's
// conversation id is a random UUID kept in localStorage.
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.dataset.key) { console.error("tertulia widget: data-key is missing"); return; }
  const server = new URL(script.src).origin;
  const widgetKey = script.dataset.key;
  const locale = navigator.language || "en";
  const spanish = /^es\b/i.test(locale);
  const text = spanish ? {
    title: "Chat", placeholder: "Escribe un mensaje", send: "Enviar", person: "Hablar con una persona",
    consent: "Para ayudarte podemos guardar tu nombre, correo y teléfono si nos los das. ¿Aceptas?",
    yes: "Acepto", no: "No, gracias", unavailable: "Este chat no está disponible en este sitio.",
    asked: "Hemos pedido que una persona se una.", joined: (n) => `${n} se unió a la conversación`,
    reconnecting: "Reconectando…", open: "Abrir chat", close: "Cerrar chat", typing: "Escribiendo…",
  } : {
    title: "Chat", placeholder: "Type a message", send: "Send", person: "Talk to a person",
    consent: "To help you, we may keep your name, email and phone number if you share them. Is that OK?",
    yes: "Accept", no: "No thanks", unavailable: "This chat is not available on this site.",
    asked: "We have asked a person to join.", joined: (n) => `${n} joined the conversation`,
    reconnecting: "Reconnecting…", open: "Open chat", close: "Close chat", typing: "Typing…",
  };
  const title = script.dataset.title || text.title;
  const consentText = script.dataset.consentText || text.consent;
  const consentVersion = script.dataset.consentVersion || "tertulia-widget-1";
  const store = "tertulia:" + widgetKey.slice(0, 11) + ":";

  function remember(name, value) { try { localStorage.setItem(store + name, value); } catch (_) { /* private mode */ } }
  function recall(name) { try { return localStorage.getItem(store + name); } catch (_) { return null; } }
  let sessionId = recall("session");
  if (!sessionId) { sessionId = window.tertuliaChat.newId(); remember("session", sessionId); }

  // ---- drawing ----
  const host = document.createElement("div");
  host.id = "tertulia-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `<style>
    :host { all: initial; }
    * { box-sizing: border-box; font-family: system-ui, sans-serif; }
    .bubble { position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px; border-radius: 50%; border: 0;
      background: #2563eb; color: #fff; font-size: 26px; cursor: pointer; box-shadow: 0 4px 14px #0003; z-index: 2147483000; }
    .panel { position: fixed; right: 20px; bottom: 88px; width: min(360px, calc(100vw - 40px)); height: min(520px, calc(100vh - 120px));
      background: #fff; color: #1d232a; border-radius: 12px; box-shadow: 0 8px 30px #0004; display: flex; flex-direction: column;
      overflow: hidden; z-index: 2147483000; }
    .panel[hidden] { display: none; }
    header { background: #2563eb; color: #fff; padding: 10px 12px; display: flex; flex-direction: column; }
    header strong { font-size: 15px; } header small { font-size: 12px; opacity: .85; min-height: 1em; }
    .log { flex: 1; overflow-y: auto; padding: 10px; display: flex; flex-direction: column; gap: 6px; font-size: 14px; }
    .msg { max-width: 85%; padding: 6px 10px; border-radius: 10px; overflow-wrap: anywhere; }
    .msg p { margin: 0 0 4px; } .msg p:last-child { margin: 0; }
    .msg pre { background: #1d232a; color: #fff; padding: 6px; border-radius: 6px; overflow-x: auto; }
    .user { align-self: flex-end; background: #2563eb; color: #fff; } .user a { color: #fff; }
    .assistant { align-self: flex-start; background: #eef0f3; } .assistant.human { background: #dcfce7; }
    .author { display: block; font-size: 11px; font-weight: 600; color: #4b5563; }
    .system, .notice { align-self: center; color: #5b6470; font-size: 12px; text-align: center; }
    .error { align-self: center; color: #b91c1c; font-size: 13px; text-align: center; }
    .consent { padding: 10px; border-top: 1px solid #e3e6ea; font-size: 13px; display: flex; flex-direction: column; gap: 8px; }
    .consent[hidden] { display: none; } .consent div { display: flex; gap: 8px; }
    form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #e3e6ea; }
    input { flex: 1; padding: 7px; font-size: 14px; border: 1px solid #cbd0d6; border-radius: 6px; }
    button { font-size: 13px; padding: 6px 10px; border-radius: 6px; border: 1px solid #cbd0d6; background: #fff; cursor: pointer; }
    button.primary { background: #2563eb; color: #fff; border-color: #2563eb; }
    .person { margin: 0 8px 8px; }
  </style>
  <button class="bubble" part="bubble" aria-expanded="false">💬</button>
  <section class="panel" hidden role="dialog">
    <header><strong class="title"></strong><small class="presence" aria-live="polite"></small></header>
    <div class="log" aria-live="polite"></div>
    <div class="consent" hidden><span class="consent-text"></span>
      <div><button class="primary yes" type="button"></button><button class="no" type="button"></button></div></div>
    <form><input class="text" autocomplete="off" disabled><button class="primary send" disabled></button></form>
    <button class="person" type="button" disabled></button>
  </section>`;
  const q = (selector) => root.querySelector(selector);
  q(".title").textContent = title;
  q(".consent-text").textContent = consentText;
  q(".yes").textContent = text.yes; q(".no").textContent = text.no;
  q(".text").placeholder = text.placeholder; q(".send").textContent = text.send;
  q(".person").textContent = text.person;
  q(".bubble").setAttribute("aria-label", text.open);
  q(".panel").setAttribute("aria-label", title);
  (document.body || document.documentElement).appendChild(host);

  const chat = window.tertuliaChat;
  const log = chat.transcript(q(".log"));
  let socket = null, started = false, usable = false, agentName = null;

  function enable(on) { for (const s of [".text", ".send", ".person"]) q(s).disabled = !on; }
  function presence(content) { q(".presence").textContent = content; }

  // The frames only the widget shows; the transcript draws the rest.
  function onFrame(frame) {
    switch (frame.type) {
      case "system": if (!q(".log .system")) log.note("system", frame.content); return true;
      case "presence": {
        const before = agentName;
        agentName = frame.agent.kind === "human" ? frame.agent.name : null;
        presence(agentName ? text.joined(agentName) : frame.handoff_requested ? text.asked : "");
        if (agentName && agentName !== before) q(".person").disabled = true;
        return true;
      }
      case "typing": presence((agentName ? agentName + ": " : "") + text.typing); return true;
      case "error": log.note("error", frame.content); return true;
      default: return false;
    }
  }

  function connect() {
    const url = new URL("/api/webchat/stream", server.replace(/^http/, "ws"));
    url.searchParams.set("session_id", sessionId);
    url.searchParams.set("key", widgetKey);
    url.searchParams.set("locale", locale);
    socket = chat.connect({
      url: () => Promise.resolve(url.href),
      transcript: log,
      onFrame,
      onOpen: () => enable(usable),
      onClose: () => { enable(false); presence(text.reconnecting); return true; },
      maxDelay: 10000,
    });
    socket.open(true);
  }

  async function call(path, options) {
    const headers = Object.assign({ "X-API-Key": widgetKey }, options && options.body ? { "Content-Type": "application/json" } : {});
    return fetch(server + path, Object.assign({}, options, { headers }));
  }

  // The history first: it also proves this page's origin is allowed (a refused
  // origin gets no CORS answer, so the browser reports a network error).
  async function start() {
    started = true;
    let history;
    try {
      history = await call(`/api/webchat/history/${encodeURIComponent(sessionId)}`);
    } catch (_) {
      log.note("error", text.unavailable);
      return;
    }
    if (history.status === 403 || history.status === 401) { log.note("error", text.unavailable); return; }
    if (history.ok) {
      for (const m of (await history.json()).messages || []) log.show(m);
    }
    if (recall("consent") === null) {
      q(".consent").hidden = false;
    } else {
      usable = true;
      connect();
    }
  }
  async function decide(granted) {
    q(".yes").disabled = true; q(".no").disabled = true;
    try {
      const r = await call("/api/webchat/consent", {
        method: "POST",
        body: JSON.stringify({ session_id: sessionId, granted, text_version: consentVersion }),
      });
      if (!r.ok) throw new Error(String(r.status));
      remember("consent", granted ? "granted" : "declined");
      q(".consent").hidden = true;
      usable = true;
      connect();
    } catch (_) {
      q(".yes").disabled = false; q(".no").disabled = false;
      log.note("error", text.unavailable);
    }
  }

  q(".bubble").onclick = () => {
    const panel = q(".panel");
    panel.hidden = !panel.hidden;
    q(".bubble").setAttribute("aria-expanded", String(!panel.hidden));
    q(".bubble").setAttribute("aria-label", panel.hidden ? text.open : text.close);
    if (!panel.hidden && !started) start();
    if (!panel.hidden) q(".text").focus();
  };
  q(".yes").onclick = () => decide(true);
  q(".no").onclick = () => decide(false);
  q("form").onsubmit = (event) => {
    event.preventDefault();
    const content = q(".text").value.trim();
    if (!content || !socket || !socket.isOpen()) return;
    socket.send(log.outgoing(content));
    q(".text").value = "";
  };
  q(".person").onclick = async () => {
    q(".person").disabled = true;
    const r = await call("/api/webchat/handoff", {
      method: "POST", body: JSON.stringify({ session_id: sessionId, reason: "The visitor pressed “" + text.person + "”" }),
    }).catch(() => null);
    if (r && r.ok) presence(text.asked); else { q(".person").disabled = false; log.note("error", text.unavailable); }
  };
})();
