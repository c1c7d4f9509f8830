/*
 * What the agent desk and the chat widget both need to speak Switchover's WebSocket protocol
 * and draw entries: building elements without ever turning text into HTML, the links they may
 * follow, where the WebSocket is, how long to wait before reconnecting, keeping the
 * connection alive, and putting entries in sequence order. One copy, so a fix to any of these
 * (a safer URL check, a gentler backoff) reaches both pages at once.
 *
 * Loaded before desk.js by the desk page; widget.js loads it by itself from next to its own
 * address, so a site still embeds the widget with a single script tag.
 */
(function () {
  "use strict";

  if (window.SwitchoverCommon) return;

  const FIRST_RETRY_MS = 500;
  const MAX_RETRY_MS = 15000;
  const PING_EVERY_MS = 25000;
  const TYPING_EVERY_MS = 2500;
  const TYPING_SHOWN_MS = 5000;

  /** Build an element: el("p", {class: "x", text: "hi"}, child...). Text never becomes HTML. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  /** Only web, mail and phone links (and, when allowed, inline images): never javascript:. */
  function safeUrl(value, allowData) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, location.href);
      if (["http:", "https:", "mailto:", "tel:"].includes(url.protocol)) return url.href;
      if (allowData && url.protocol === "data:" && /^data:image\//i.test(value)) return value;
    } catch (_) {
      /* not a URL */
    }
    return null;
  }

  /** A question's or card's buttons, whether given bare or wrapped as {content: {...}}. */
  function buttonsOf(content) {
    const list = content && Array.isArray(content.buttons) ? content.buttons : [];
    return list
      .map((button) => (button && button.content ? button.content : button) || {})
      .filter((button) => typeof button.title === "string" || typeof button.payload === "string");
  }

  /** The time of day of an entry (its `at`, in seconds), or of now when it has none. */
  function clock(seconds) {
    const when = typeof seconds === "number" ? new Date(seconds * 1000) : new Date();
    return when.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  /** What was saved under `key`, or null when nothing (readable) was. */
  function readJson(storage, key) {
    try {
      const raw = storage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch (_) {
      return null;
    }
  }

  /** A frame from the server, or null for anything that is not JSON. */
  function parseFrame(data) {
    try {
      return JSON.parse(data);
    } catch (_) {
      return null;
    }
  }

  /**
   * The WebSocket address that `config.json` gives; throws when it gives none. Without a
   * `ws_url` (the server listens on every address), `ws_port` on the host config.json came from.
   */
  async function websocketUrl(configUrl) {
    const response = await fetch(configUrl, {cache: "no-store"});
    if (!response.ok) throw new Error(`config.json answered ${response.status}`);
    const config = await response.json();
    if (config && typeof config.ws_url === "string") return config.ws_url;
    if (config && Number.isInteger(config.ws_port) && config.ws_port > 0) {
      const base = new URL(configUrl, window.location.href);
      const scheme = base.protocol === "https:" ? "wss:" : "ws:";
      return `${scheme}//${base.hostname}:${config.ws_port}/`;
    }
    throw new Error("config.json has no ws_url");
  }

  /**
   * How long to wait before reconnection attempt number `attempt` (from 0): doubling from half
   * a second up to 15 seconds, with jitter so that many pages cut off together do not all
   * come back in the same instant.
   */
  function retryDelay(attempt) {
    return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
  }

  /**
   * Ping every 25 seconds while `client.ready`, so that proxies do not close an idle
   * connection. `client` has `ws`, `ready` and keeps the timer in `pinger`.
   */
  function keepAlive(client) {
    clearInterval(client.pinger);
    client.pinger = setInterval(() => {
      if (client.ready) client.ws.send(JSON.stringify({type: "ping"}));
    }, PING_EVERY_MS);
  }

  /** Enter sends, Shift+Enter starts a new line, and nothing fires while an IME composes. */
  function sendOnEnter(textarea, send) {
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
  }

  /** Whether it is time to tell the other side we are typing again (at most every 2.5 s). */
  function typingDue(client) {
    const now = Date.now();
    if (now - (client.lastTypingSent || 0) < TYPING_EVERY_MS) return false;
    client.lastTypingSent = now;
    return true;
  }

  /** Show "… is typing" in `node` until the next entry, or for five seconds at most. */
  function showTyping(client, node, text) {
    node.textContent = text;
    node.hidden = false;
    clearTimeout(client.typingTimer);
    client.typingTimer = setTimeout(() => {
      node.hidden = true;
    }, TYPING_SHOWN_MS);
  }

  /**
   * Put `item` (the entry numbered `seq`) into `log` in sequence order: entries mostly come in
   * order, but one's own messages are filed when their ack arrives. Returns whether it went
   * at the end, where the reader's eye is.
   */
  function placeInOrder(log, item, seq) {
    item.dataset.seq = String(seq);
    const later = [...log.children].find((child) => Number(child.dataset.seq) > seq);
    log.insertBefore(item, later || null);
    return !later;
  }

  window.SwitchoverCommon = Object.freeze({
    el,
    safeUrl,
    buttonsOf,
    clock,
    readJson,
    parseFrame,
    websocketUrl,
    retryDelay,
    keepAlive,
    sendOnEnter,
    typingDue,
    showTyping,
    placeInOrder,
  });
})();

/*
 * Attachments, for both pages: the attach button of a composer, the upload, and drawing an
 * attachment a message carries (an image inline, any other file as a download link). The
 * files are served only to the conversation's parties, so they are fetched with the page's
 * token (never put in an address) and shown from memory (blob: addresses).
 */
(function () {
  "use strict";

  if (window.SwitchoverAttachments || !window.SwitchoverCommon) return;
  const {el} = window.SwitchoverCommon;
  const ID = /^[A-Za-z0-9_-]{16,64}$/;
  const KEPT_FILES = 100;
  const fetched = new Map(); // address -> Promise of a blob: address, the oldest first

  /** What an entry's attachment is, or null when it carries none Switchover stored. */
  function attachmentOf(entry) {
    const content = (entry && entry.content) || {};
    if (!entry || !["image", "file"].includes(entry.content_type) || !ID.test(content.attachment_id || "")) {
      return null;
    }
    return {
      conversationId: String(entry.conversation_id || ""),
      id: content.attachment_id,
      name: typeof content.name === "string" && content.name ? content.name : "attachment",
      size: Number(content.size) || 0,
      image: entry.content_type === "image",
    };
  }

  /** A paperclip drawn in SVG (emoji fonts are not everywhere), hidden from screen readers. */
  function clipIcon(className) {
    const svgNs = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNs, "svg");
    for (const [name, value] of Object.entries({
      class: className,
      viewBox: "0 0 24 24",
      width: "18",
      height: "18",
      fill: "none",
      stroke: "currentColor",
      "stroke-width": "2",
      "stroke-linecap": "round",
      "stroke-linejoin": "round",
      "aria-hidden": "true",
      focusable: "false",
    })) {
      svg.setAttribute(name, value);
    }
    const path = document.createElementNS(svgNs, "path");
    path.setAttribute(
      "d",
      "M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48",
    );
    svg.append(path);
    return svg;
  }

  /** "12 KB", "3.4 MB". */
  function sizeText(size) {
    if (size >= 1024 * 1024) return `${(size / (1024 * 1024)).toFixed(1)} MB`;
    if (size >= 1024) return `${Math.round(size / 1024)} KB`;
    return `${size} bytes`;
  }

  /**
   * Where a conversation's attachments are: built from the ids, never from the message's own
   * `url`, so a forged message cannot send the token elsewhere.
   */
  function address(base, conversationId, attachmentId) {
    const path = `v1/conversations/${encodeURIComponent(conversationId)}/attachments`;
    return new URL(attachmentId ? `${path}/${encodeURIComponent(attachmentId)}` : path, base).href;
  }

  /** The words of a JSON error answer, or a general one. */
  async function refusal(response) {
    try {
      const answer = await response.json();
      if (answer && typeof answer.message === "string") return answer.message;
    } catch (_) {
      /* not JSON */
    }
    return `The server answered ${response.status}.`;
  }

  /** The file as a blob: address, fetched once with the token. */
  function blobUrl(url, token) {
    if (!fetched.has(url)) {
      const loading = fetch(url, {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"}).then(
        async (response) => {
          if (!response.ok) throw new Error(await refusal(response));
          return URL.createObjectURL(await response.blob());
        },
      );
      loading.catch(() => fetched.delete(url)); // tried again next time it is drawn
      fetched.set(url, loading);
      if (fetched.size > KEPT_FILES) {
        const [oldest, promise] = fetched.entries().next().value;
        fetched.delete(oldest);
        promise.then((made) => URL.revokeObjectURL(made), () => {});
      }
    }
    return fetched.get(url);
  }

  /**
   * The element for an entry's attachment. `options`: `base` (the Switchover server's
   * address), `token()` (the page's current token), `prefix` (the page's class prefix),
   * `drawn()` (called once a picture has arrived and taken its room: scroll to it).
   */
  function render(attachment, options) {
    const prefix = options.prefix || "";
    const url = address(options.base, attachment.conversationId, attachment.id);
    const caption = `${attachment.name} (${sizeText(attachment.size)})`;
    if (attachment.image) {
      const img = el("img", {class: `${prefix}attachment-thumb`, alt: attachment.name});
      if (options.drawn) img.addEventListener("load", () => options.drawn(), {once: true});
      const link = el(
        "a",
        {class: `${prefix}attachment ${prefix}attachment-image`, target: "_blank", rel: "noopener", title: `Open ${caption}`},
        img,
      );
      blobUrl(url, options.token()).then(
        (made) => {
          img.src = made;
          link.href = made;
        },
        (error) => link.replaceChildren(el("span", {class: `${prefix}attachment-missing`, text: `${attachment.name}: ${error.message}`})),
      );
      return link;
    }
    const link = el(
      "a",
      {class: `${prefix}attachment ${prefix}attachment-file`, href: url, download: attachment.name},
      clipIcon(`${prefix}attachment-icon`),
      caption,
    );
    link.addEventListener("click", (event) => {
      if (link.dataset.ready) return; // the blob: address is in place: the browser saves it
      event.preventDefault();
      blobUrl(url, options.token()).then(
        (made) => {
          link.href = made;
          link.dataset.ready = "yes";
          link.click();
        },
        (error) => {
          link.title = error.message;
          link.classList.add(`${prefix}attachment-missing`);
        },
      );
    });
    return link;
  }

  /** Send `file` into a conversation; resolves with the server's answer, rejects with words. */
  async function upload(options, conversationId, file) {
    const url = new URL(address(options.base, conversationId));
    url.searchParams.set("name", file.name || "attachment");
    let response;
    try {
      response = await fetch(url.href, {
        method: "POST",
        headers: {Authorization: `Bearer ${options.token()}`, "Content-Type": file.type || "application/octet-stream"},
        body: file,
      });
    } catch (_) {
      throw new Error(`${file.name} could not be sent: the server cannot be reached.`);
    }
    if (!response.ok) throw new Error(`${file.name} was not sent: ${await refusal(response)}`);
    return response.json();
  }

  /**
   * A paperclip button and its hidden file input: `send(file)` is called with the file
   * chosen and returns a promise; the button is busy until it settles (then enabled unless
   * `options.disabled()` says otherwise).
   */
  function button(options, send) {
    const prefix = options.prefix || "";
    const input = el("input", {type: "file", class: `${prefix}attach-input`, hidden: true, tabindex: "-1"});
    const attach = el("button", {
      type: "button",
      class: `${prefix}attach`,
      "aria-label": "Attach a file",
      title: "Attach an image or a file",
      onclick: () => input.click(),
    });
    attach.append(clipIcon(`${prefix}attach-icon`));
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      input.value = "";
      if (!file) return;
      attach.disabled = true;
      attach.setAttribute("aria-busy", "true");
      Promise.resolve(send(file)).finally(() => {
        attach.disabled = Boolean(options.disabled && options.disabled());
        attach.removeAttribute("aria-busy");
      });
    });
    return {button: attach, input};
  }

  window.SwitchoverAttachments = Object.freeze({attachmentOf, sizeText, address, render, upload, button});
})();
