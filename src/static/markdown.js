// tertulia's Markdown: a small subset (paragraphs, **bold**, *italic*, `code`,
// fenced code blocks, lists, headings, http(s) links) rendered into DOM nodes.
// Message text only ever reaches the page through text nodes and textContent,
// never innerHTML, so no message can inject HTML or script. Links are http(s)
// only and open in a new tab without access to this page.
(function (global) {
  "use strict";
  if (global.tertuliaMarkdown) return;

  const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|(\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\))|(https?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]])/g;

  function link(label, href, parent) {
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    a.textContent = label;
    parent.appendChild(a);
  }

  function inline(text, parent) {
    let last = 0;
    let match;
    const pattern = new RegExp(INLINE.source, "g");
    while ((match = pattern.exec(text))) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      const token = match[0];
      if (match[1]) {
        const code = document.createElement("code");
        code.textContent = token.slice(1, -1);
        parent.appendChild(code);
      } else if (match[2]) {
        const strong = document.createElement("strong");
        inline(token.slice(2, -2), strong);
        parent.appendChild(strong);
      } else if (match[3]) {
        const em = document.createElement("em");
        inline(token.slice(1, -1), em);
        parent.appendChild(em);
      } else if (match[4]) {
        link(match[5], match[6], parent);
      } else {
        link(token, token, parent);
      }
      last = match.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function lines(parent, block) {
    block.forEach((line, index) => {
      if (index > 0) parent.appendChild(document.createElement("br"));
      inline(line, parent);
    });
  }

  // Renders `text` as the only content of `container`.
  function render(text, container) {
    container.replaceChildren();
    const source = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < source.length) {
      const line = source[i];
      if (/^\s*```/.test(line)) {
        const code = [];
        i += 1;
        while (i < source.length && !/^\s*```/.test(source[i])) code.push(source[i++]);
        i += 1; // the closing fence (or the end of an answer still streaming)
        const pre = document.createElement("pre");
        const el = document.createElement("code");
        el.textContent = code.join("\n");
        pre.appendChild(el);
        container.appendChild(pre);
      } else if (/^\s*[-*+] /.test(line) || /^\s*\d+[.)] /.test(line)) {
        const ordered = /^\s*\d+[.)] /.test(line);
        const list = document.createElement(ordered ? "ol" : "ul");
        const item = ordered ? /^\s*\d+[.)] (.*)$/ : /^\s*[-*+] (.*)$/;
        while (i < source.length && item.test(source[i])) {
          const li = document.createElement("li");
          inline(source[i].match(item)[1], li);
          list.appendChild(li);
          i += 1;
        }
        container.appendChild(list);
      } else if (/^#{1,6} /.test(line)) {
        const heading = document.createElement("p");
        const strong = document.createElement("strong");
        inline(line.replace(/^#{1,6} /, ""), strong);
        heading.appendChild(strong);
        container.appendChild(heading);
        i += 1;
      } else if (line.trim() === "") {
        i += 1;
      } else {
        const block = [];
        while (i < source.length && source[i].trim() !== "" && !/^\s*```/.test(source[i])
          && !/^\s*[-*+] /.test(source[i]) && !/^\s*\d+[.)] /.test(source[i]) && !/^#{1,6} /.test(source[i])) {
          block.push(source[i++]);
        }
        const p = document.createElement("p");
        lines(p, block);
        container.appendChild(p);
      }
    }
  }

  global.tertuliaMarkdown = { render };
})(window);
