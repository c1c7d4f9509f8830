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
