/*
 * Switchover chat widget: an embeddable chat window that talks to a bot and, when the user
 * asks for one, to a human agent, over Switchover's WebSocket protocol.
 *
 * Embed it with one tag (the widget mounts into data-target, or floats in a corner without it):
 *   <script src="https://chat.example.com/static/widget.js" data-bot="demo"></script>
 * or mount it yourself:
 *   Switchover.mount(document.querySelector("#chat"), {bot: "demo", metadata: {name: "Uma"}});
 *
 * The conversation survives a page reload: the resume token, the last sequence number seen and
 * the recent entries are kept in localStorage, so the widget shows what was said and asks the
 * server only for what it missed. Every entry carries a sequence number; one already shown is
 * a duplicate and is dropped, so reconnecting never shows a message twice.
 *
 * The server does not echo the user's own messages back: it acknowledges each with the seq it
 * was given, and the widget shows the message then, in seq order. Until then the message shows
 * as "Sending…": written while offline, or unacknowledged when the connection dropped, it is
 * sent again with the same id once the connection is back (the server stores a message once
 * per id), and after `sendTimeout` without an ack it shows "Not sent" with a Retry button.
 *
 * When its window is open on a conversation with nothing in it yet, the widget sends the
 * payload CONVERSATION_START as the user (not shown), so the bot greets first and its "Talk to
 * a human" button is there before the user types. Only the latest unanswered question keeps
 * its quick replies.
 *
 * What it shares with the agent desk (building elements, safe links, the connection's backoff
 * and keep-alive, ordering entries) lives in switchover-common.js. This script loads that file
 * from next to its own address, the way it loads widget.css, so embedding stays one tag; a
 * page that already loaded it (before this script) has the widget drawn at once.
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const SCRIPT_SRC = (script && script.src) || location.href;
  const KEPT_ENTRIES = 300;
  const SESSION_START = "LIVECHAT_SESSION_START";
  const SESSION_END = "LIVECHAT_SESSION_END";
  const WELCOME = "CONVERSATION_START";
  // How long a message may wait for its ack (offline included) before it shows "Not sent".
  const SEND_TIMEOUT_MS = 30000;

  // Filled in from switchover-common.js once it has loaded (see commonLoaded).
  let common = null;
  let el = null;
  let safeUrl = null;
  let loadingCommon = null;

  function adopt(loaded) {
    common = loaded;
    ({el, safeUrl} = loaded);
    return loaded;
  }

  /** The shared script, loaded from next to this one unless the page already has it. */
  function commonLoaded() {
    if (window.SwitchoverCommon) return Promise.resolve(adopt(window.SwitchoverCommon));
    if (!loadingCommon) {
      loadingCommon = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = new URL("switchover-common.js", SCRIPT_SRC).href;
        tag.dataset.switchoverCommon = "";
        tag.addEventListener("load", () => {
          if (window.SwitchoverCommon) resolve(adopt(window.SwitchoverCommon));
          else reject(new Error(`${tag.src} did not define SwitchoverCommon`));
        });
        tag.addEventListener("error", () => reject(new Error(`could not load ${tag.src}`)));
        document.head.append(tag);
      });
      // A failed load is tried again by the next mount.
      loadingCommon.catch(() => {
        loadingCommon = null;
      });
    }
    return loadingCommon;
  }

  /** Text with its web addresses turned into links. */
  function linkified(text) {
    const out = document.createDocumentFragment();
    const parts = String(text).split(/(https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'])/);
    parts.forEach((part, index) => {
      const href = index % 2 === 1 ? safeUrl(part) : null;
      if (href) {
        out.append(el("a", {href, target: "_blank", rel: "noopener noreferrer", text: part}));
      } else if (part) {
        out.append(document.createTextNode(part));
      }
    });
    return out;
  }

  const NOTICES = {
    session_started: () => "You asked for a person. Looking for an available agent…",
    queued: (c) => `You are number ${c.position} in the queue.`,
    nobody: () => "Nobody is available right now. You keep your place and will be connected as soon as someone is.",
    agent_joined: (c) => `${c.name || c.agent_id || "An agent"} joined the conversation.`,
    agent_left: (c) =>
      `${c.name || "The agent"} left. You are back in the queue for the next available agent.`,
    transferred: () => "The conversation was transferred to another agent.",
    session_ended: (c, mode) =>
      mode === "live"
        ? `The conversation with ${c.name || "the agent"} has ended.`
        : c.reason === "user_ended"
          ? "You left the queue."
          : "The request for an agent was closed. You are back with the assistant.",
    // Nobody joined a session that expires while waiting: no agent is blamed for it.
    session_expired: (c, mode) =>
      mode === "live"
        ? `The conversation with ${c.name || "the agent"} expired after a period of inactivity.`
        : "No agent could take your conversation in time. You are back with the assistant.",
    livechat_unreachable: () =>
      "Our team can't be reached right now. Your messages are kept and will reach them as soon as possible.",
  };

  /** The queue frame's estimated wait (seconds) in words, or "" when unknown. */
  function waitWords(seconds) {
    if (typeof seconds !== "number" || !(seconds >= 0)) return "";
    if (seconds < 60) return "Estimated wait: less than a minute.";
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return `Estimated wait: about ${minutes} minute${minutes === 1 ? "" : "s"}.`;
    const hours = Math.round(minutes / 60);
    return `Estimated wait: about ${hours} hour${hours === 1 ? "" : "s"}.`;
  }

  function websocketUrl(options) {
    if (options.wsUrl) return Promise.resolve(options.wsUrl);
    return common.websocketUrl(options.configUrl || new URL("/config.json", SCRIPT_SRC).href);
  }

  class ChatWidget {
    constructor(root, options) {
      this.root = root;
      this.options = options || {};
      this.bot = this.options.bot || "demo";
      this.storageKey = this.options.storageKey || `switchover:widget:${this.bot}`;
      this.metadata = Object.assign(
        {page: location.href, language: navigator.language},
        this.options.metadata || {},
      );
      this.lastSeq = 0;
      this.shown = new Set();
      // Messages not yet acknowledged, by id, in the order written: {frame, item, state, timer}.
      this.pending = new Map();
      this.seqBeforeUnacked = 0;
      this.sendTimeout = Number(this.options.sendTimeout) > 0 ? Number(this.options.sendTimeout) : SEND_TIMEOUT_MS;
      // Whether the window is on screen: a floating one starts closed (see mountFloating).
      this.isOpen = this.options.open !== false;
      this.unread = 0;
      this.endingForNewChat = null;
      this.labels = new Map([[SESSION_START, "Talk to a person"], [SESSION_END, "End conversation"]]);
      this.mode = "bot";
      this.agentName = "";
      this.queueText = "Waiting for an agent…";
      this.waitText = "";
      this.ws = null;
      this.ready = false;
      this.attempt = 0;
      this.closed = false;
      this.nextId = 1;
      // Ids unique beyond this page: a reused id of a stored message is taken for a resend.
      this.idPrefix = Math.random().toString(36).slice(2, 10);
      this.lastTypingSent = 0;
      if (window.SwitchoverCommon) {
        adopt(window.SwitchoverCommon);
        this.start();
      } else {
        commonLoaded().then(
          () => this.start(),
          (error) => this.cannotStart(error),
        );
      }
    }

    /** Draw the window, redraw the saved conversation and connect. */
    start() {
      if (this.closed) return;
      const saved = common.readJson(localStorage, this.storageKey) || {};
      this.saved = {
        conversation_id: saved.conversation_id || null,
        resume_token: saved.resume_token || null,
        last_seq: Number(saved.last_seq) || 0,
        entries: Array.isArray(saved.entries) ? saved.entries : [],
        greeted: Boolean(saved.greeted),
      };
      this.build();
      for (const entry of this.saved.entries) this.show(entry, false);
      this.refreshChoices();
      this.lastSeq = Math.max(this.lastSeq, this.saved.last_seq);
      this.onOnline = () => this.reconnectSoon(0);
      window.addEventListener("online", this.onOnline);
      this.connect();
    }

    cannotStart(error) {
      if (this.closed) return;
      const alert = document.createElement("p");
      alert.setAttribute("role", "alert");
      alert.textContent = `The chat could not be loaded (${error.message}).`;
      this.root.replaceChildren(alert);
    }

    // -- the page -------------------------------------------------------------------------

    build() {
      const title = this.options.title || "Chat";
      this.root.classList.add("so-widget");
      this.root.setAttribute("role", "region");
      this.root.setAttribute("aria-label", title);
      this.status = el("span", {class: "so-connection", role: "status", text: "Connecting…"});
      this.log = el("ol", {
        class: "so-log",
        role: "log",
        "aria-live": "polite",
        "aria-relevant": "additions",
        "aria-label": "Conversation",
        tabindex: "0",
      });
      // The queue line: where the user stands (banner), the wait or "nobody available" (wait),
      // and the way out. The banner alone says who the user is chatting with once live.
      this.banner = el("p", {class: "so-banner", role: "status"});
      this.wait = el("p", {class: "so-wait", "aria-live": "polite", hidden: true});
      this.leave = el("button", {
        type: "button",
        class: "so-leave",
        text: "Leave the queue",
        hidden: true,
        onclick: () => this.leaveQueue(),
      });
      this.queueBox = el("div", {class: "so-queue", hidden: true}, this.banner, this.wait, this.leave);
      this.typing = el("p", {class: "so-typing", hidden: true});
      this.alert = el("p", {class: "so-alert", role: "alert", hidden: true});
      this.input = el("textarea", {
        class: "so-input",
        rows: "1",
        "aria-label": "Message",
        placeholder: "Write a message…",
        maxlength: "4000",
        enterkeyhint: "send",
      });
      common.sendOnEnter(this.input, () => this.sendText());
      this.input.addEventListener("input", () => this.userIsTyping());
      this.form = el(
        "form",
        {class: "so-composer", "aria-label": "Send a message"},
        this.input,
        el("button", {type: "submit", class: "so-send", text: "Send"}),
      );
      this.form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.sendText();
      });
      this.addAttachButton();
      this.newChat = el("button", {
        type: "button",
        class: "so-restart",
        text: "New chat",
        title: "Forget this conversation and start a new one",
        onclick: () => this.askNewChat(),
      });
      this.confirm = this.buildConfirm();
      this.root.replaceChildren(
        el("header", {class: "so-header"}, el("h2", {text: title}), this.status, this.newChat),
        this.log,
        this.queueBox,
        this.typing,
        this.alert,
        this.confirm,
        this.form,
      );
    }

    /** The in-window question asked before "New chat" ends a session that is open. */
    buildConfirm() {
      const id = `so-confirm-${this.idPrefix}`;
      this.confirmText = el("p", {class: "so-confirm-text", id: `${id}-text`});
      this.confirmYes = el("button", {
        type: "button",
        class: "so-confirm-yes",
        text: "End it and start a new chat",
        onclick: () => this.confirmNewChat(),
      });
      this.confirmNo = el("button", {
        type: "button",
        class: "so-confirm-no",
        text: "Keep this chat",
        onclick: () => this.closeConfirm(),
      });
      const box = el(
        "div",
        {
          class: "so-confirm",
          role: "alertdialog",
          "aria-modal": "true",
          "aria-labelledby": `${id}-title`,
          "aria-describedby": `${id}-text`,
          hidden: true,
        },
        el("p", {class: "so-confirm-title", id: `${id}-title`, text: "Start a new chat?"}),
        this.confirmText,
        el("div", {class: "so-confirm-actions"}, this.confirmYes, this.confirmNo),
      );
      box.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {
          event.stopPropagation();
          this.closeConfirm();
        } else if (event.key === "Tab") {
          // Keep the keyboard inside the question while it is asked.
          const order = [this.confirmYes, this.confirmNo];
          const at = order.indexOf(document.activeElement);
          event.preventDefault();
          order[(at + (event.shiftKey ? order.length - 1 : 1)) % order.length].focus();
        }
      });
      return box;
    }

    setConnection(text, state) {
      this.status.textContent = text;
      this.status.dataset.state = state;
      this.root.dataset.connection = state;
    }

    showAlert(text) {
      this.alert.textContent = text;
      this.alert.hidden = !text;
    }

    showRefusal(frame) {
      const text = frame.message || `The server refused that (${frame.code}).`;
      if (frame.id !== undefined && frame.id === this.endingForNewChat) this.endingForNewChat = null;
      const pending = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
      if (pending) this.notSent(pending);
      this.showAlert(text);
    }

    scrollDown() {
      this.log.scrollTop = this.log.scrollHeight;
    }

    setMode(mode, agentName) {
      this.mode = mode;
      if (agentName !== undefined) this.agentName = agentName;
      this.root.dataset.mode = mode;
      if (mode === "bot") {
        this.queueBox.hidden = true;
        this.waitText = "";
        for (const button of this.log.querySelectorAll(".so-sign-off button")) {
          // A disabled button drops focus to the page's start: move it to the message box.
          if (button === document.activeElement) this.input.focus();
          button.disabled = true;
        }
        if (!this.confirm.hidden) this.closeConfirm();
      } else {
        this.queueBox.hidden = false;
        this.banner.textContent =
          mode === "live" ? `You are chatting with ${this.agentName || "an agent"}.` : this.queueText;
      }
      const waiting = mode === "queued";
      if (!waiting && this.leave === document.activeElement) this.input.focus();
      this.leave.hidden = !waiting;
      this.wait.hidden = !waiting || !this.waitText;
      this.wait.textContent = waiting ? this.waitText : "";
    }

    // -- entries --------------------------------------------------------------------------

    /** Render one entry (fresh from the server when `fresh`, or from the saved transcript). */
    show(entry, fresh) {
      if (typeof entry.seq !== "number" || this.shown.has(entry.seq)) return false;
      this.shown.add(entry.seq);
      this.lastSeq = Math.max(this.lastSeq, entry.seq);
      const item = this.render(entry);
      if (item) {
        common.placeInOrder(this.log, item, entry.seq);
        // Messages still being sent stay last, where they were written.
        const firstPending = this.log.querySelector(".so-pending");
        if (firstPending && firstPending.compareDocumentPosition(item) & Node.DOCUMENT_POSITION_FOLLOWING) {
          this.log.insertBefore(item, firstPending);
        }
        this.scrollDown();
        if (fresh) this.refreshChoices();
      }
      if (entry.sender === "agent") this.typing.hidden = true;
      if (fresh && !this.isOpen && (entry.sender === "bot" || entry.sender === "agent")) {
        this.unread += 1;
        this.unreadChanged();
      }
      if (fresh) {
        this.saved.entries.push(entry);
        this.saved.entries.sort((a, b) => a.seq - b.seq);
        if (this.saved.entries.length > KEPT_ENTRIES) {
          this.saved.entries.splice(0, this.saved.entries.length - KEPT_ENTRIES);
        }
        this.saved.last_seq = this.lastSeq;
        this.save();
      }
      return true;
    }

    render(entry) {
      const content = entry.content || {};
      // The widget's own "the window opened" is for the bot only.
      if (entry.sender === "user" && entry.content_type === "payload" && content.payload === WELCOME) return null;
      // Only the system's notices are notices: anything else shaped like one is its sender's.
      if (entry.content_type === "notice" && entry.sender === "system") return this.renderNotice(entry, content);
      const sender = ["user", "bot", "agent", "system"].includes(entry.sender) ? entry.sender : "bot";
      const item = el("li", {class: `so-entry so-from-${sender}`});
      const who = {user: "You", bot: "Assistant", agent: this.agentName || "Agent", system: "Notice"};
      if (sender === "agent") {
        item.append(el("span", {class: "so-name", text: who.agent, "aria-hidden": "true"}));
      }
      item.append(el("span", {class: "so-visually-hidden", text: `${who[sender]}: `}));
      const body = el("div", {class: "so-bubble"});
      this.renderContent(entry, content, body);
      item.append(body, el("time", {class: "so-time", text: common.clock(entry.at)}));
      return item;
    }

    renderNotice(entry, content) {
      const describe = NOTICES[content.code];
      const text = describe ? describe(content, this.mode) : content.text || "";
      if (!text) return null;
      if (content.code === "queued") {
        this.queueText = text;
        for (const old of this.log.querySelectorAll(".so-notice-queued")) old.remove();
        this.setMode("queued");
      } else if (content.code === "session_started" || content.code === "agent_left") {
        this.queueText = "Waiting for an agent…";
        this.waitText = "";
        this.setMode("queued");
      } else if (content.code === "agent_joined") {
        this.setMode("live", content.name || content.agent_id || "");
      } else if (content.code === "session_ended" || content.code === "session_expired") {
        this.setMode("bot", "");
      }
      return el("li", {
        class: `so-entry so-notice so-notice-${String(content.code).replace(/[^a-z_]/g, "")}`,
        text,
      });
    }

    renderContent(entry, content, body) {
      const type = entry.content_type;
      if (this.drawAttachment(entry, body)) return;
      if (type === "text") {
        body.append(linkified(content.text || ""));
      } else if (type === "payload") {
        const payload = String(content.payload || "");
        body.append(this.labels.get(payload) || content.title || payload);
      } else if (type === "question") {
        this.renderQuestion(entry, content, body);
      } else if (type === "image") {
        const src = safeUrl(content.url, true);
        const img = el("img", {src, alt: content.alt || content.title || "Image", loading: "lazy"});
        body.append(src ? el("a", {href: src, target: "_blank", rel: "noopener noreferrer"}, img) : "[image]");
      } else if (type === "url") {
        const href = safeUrl(content.url);
        const text = content.text || content.title || content.url || "link";
        body.append(href ? el("a", {href, target: "_blank", rel: "noopener noreferrer", text}) : text);
      } else if (type === "file" || type === "audio" || type === "video") {
        const href = safeUrl(content.url);
        const name = content.title || content.name || (href ? decodeURIComponent(href.split("/").pop()) : type);
        if (href && type !== "file") {
          body.append(el(type, {src: href, controls: true, preload: "none", "aria-label": name}));
        }
        body.append(
          href
            ? el("a", {href, target: "_blank", rel: "noopener noreferrer", download: type === "file", text: `${name}`})
            : name,
        );
      } else if (type === "card" || type === "carousel") {
        const cards = type === "card" ? [content] : Array.isArray(content.cards) ? content.cards : [];
        const list = el("div", {class: "so-cards"});
        for (const card of cards) {
          const data = card.content || card;
          const image = safeUrl(data.image_url, true);
          const cardNode = el(
            "div",
            {class: "so-card"},
            image ? el("img", {src: image, alt: data.title || "", loading: "lazy"}) : null,
            data.title ? el("strong", {text: data.title}) : null,
            data.subtitle ? el("p", {text: data.subtitle}) : null,
          );
          this.renderButtons(common.buttonsOf(data), cardNode, false);
          list.append(cardNode);
        }
        body.append(list);
      } else if (typeof content.text === "string") {
        body.append(linkified(content.text));
      } else {
        body.append(el("em", {text: `[${type} message]`}));
      }
    }

    // -- attachments (switchover-common.js draws and sends them) ---------------------------

    attachmentOptions() {
      return {
        // The server the widget came from: next to config.json, or above /static/widget.js.
        base: this.options.configUrl
          ? new URL("./", new URL(this.options.configUrl, location.href)).href
          : new URL("../", SCRIPT_SRC).href,
        token: () => this.saved.resume_token || "",
        prefix: "so-",
        drawn: () => this.scrollDown(),
      };
    }

    /** The paperclip in the composer; shown while an agent is asked for or present. */
    addAttachButton() {
      const files = window.SwitchoverAttachments;
      if (!files) return;
      const {button, input} = files.button(this.attachmentOptions(), (file) => this.sendFile(file));
      this.form.prepend(button, input);
    }

    sendFile(file) {
      const files = window.SwitchoverAttachments;
      if (!this.saved.conversation_id || !this.saved.resume_token) {
        this.showAlert("The chat is not connected yet; try again in a moment.");
        return Promise.resolve();
      }
      this.showAlert("");
      return files.upload(this.attachmentOptions(), this.saved.conversation_id, file).then(
        () => this.input.focus(),
        (error) => this.showAlert(error.message),
      );
    }

    /** Draw an attachment Switchover stored in `body`; false when the entry has none. */
    drawAttachment(entry, body) {
      const files = window.SwitchoverAttachments;
      const attachment = files && files.attachmentOf(entry);
      if (!attachment) return false;
      if (!attachment.conversationId) attachment.conversationId = this.saved.conversation_id || "";
      body.append(files.render(attachment, this.attachmentOptions()));
      return true;
    }

    renderQuestion(entry, content, body) {
      const signOff = Boolean(entry.metadata && entry.metadata.sign_off);
      if (signOff) body.classList.add("so-sign-off");
      body.append(el("p", {class: "so-question", text: content.title || content.text || ""}));
      // A sign-off's button stays for the whole session; other choices are quick replies.
      this.renderButtons(common.buttonsOf(content), body, signOff && this.mode === "bot", !signOff);
    }

    /**
     * Quick replies do not pile up: only the newest question's buttons are kept, and only
     * until the user says or clicks anything after it (older ones are removed).
     */
    refreshChoices() {
      const groups = [...this.log.querySelectorAll(".so-quick")];
      groups.forEach((group, index) => {
        const item = group.closest("li");
        let answered = index < groups.length - 1;
        for (let next = item && item.nextElementSibling; next && !answered; next = next.nextElementSibling) {
          answered = next.classList.contains("so-from-user");
        }
        if (!answered) return;
        if (group.contains(document.activeElement)) this.input.focus();
        group.remove();
      });
    }

    renderButtons(buttons, parent, disabled, quick) {
      if (!buttons.length) return;
      const group = el("div", {class: `so-buttons${quick ? " so-quick" : ""}`, role: "group", "aria-label": "Choices"});
      for (const button of buttons) {
        const title = button.title || button.payload;
        const payload = button.payload || button.title;
        this.labels.set(payload, title);
        group.append(
          el("button", {
            type: "button",
            class: "so-choice",
            text: title,
            "data-payload": payload,
            disabled,
            onclick: () => this.sendPayload(payload),
          }),
        );
      }
      parent.append(group);
    }

    // -- sending --------------------------------------------------------------------------

    sendText() {
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.submit({content_type: "text", content: {text}});
      this.input.focus();
    }

    sendPayload(payload) {
      return this.submit({content_type: "payload", content: {payload}});
    }

    /**
     * Send a message (or keep it until the connection is back), shown as "Sending…" until its
     * ack; `hidden` ones (the window-opened payload) show nothing. Returns the message's id.
     */
    submit(message, hidden) {
      const frame = Object.assign({type: "message", id: `c${this.idPrefix}-${this.nextId++}`}, message);
      const pending = {frame, item: hidden ? null : this.pendingItem(frame), state: "sending", timer: null, sent: false};
      this.pending.set(frame.id, pending);
      if (pending.item) {
        this.log.append(pending.item);
        this.scrollDown();
        this.refreshChoices();
      }
      this.armSendTimeout(pending);
      if (this.ready) this.transmit(pending);
      return frame.id;
    }

    pendingItem(frame) {
      const item = el("li", {class: "so-entry so-from-user so-pending", "data-pending": frame.id});
      const body = el("div", {class: "so-bubble"});
      this.renderContent(frame, frame.content, body);
      this.pendingStatus(item, "Sending…");
      item.prepend(el("span", {class: "so-visually-hidden", text: "You: "}), body);
      return item;
    }

    pendingStatus(item, text, retry) {
      const old = item.querySelector(".so-delivery");
      if (old && old.contains(document.activeElement)) this.input.focus();
      if (old) old.remove();
      item.append(el("span", {class: "so-delivery", text}, retry || null));
    }

    armSendTimeout(pending) {
      clearTimeout(pending.timer);
      pending.timer = setTimeout(() => {
        if (this.pending.get(pending.frame.id) === pending && pending.state === "sending") this.notSent(pending);
      }, this.sendTimeout);
    }

    /** No ack in time (or a refusal): say so and offer to send it again, with the same id. */
    notSent(pending) {
      clearTimeout(pending.timer);
      pending.state = "failed";
      if (pending.frame.id === this.endingForNewChat) this.endingForNewChat = null;
      if (!pending.item) {
        this.pending.delete(pending.frame.id);
        return;
      }
      pending.item.classList.add("so-not-sent");
      const retry = el("button", {
        type: "button",
        class: "so-retry",
        text: "Retry",
        "aria-label": "Retry sending this message",
        onclick: () => this.retry(pending),
      });
      this.pendingStatus(pending.item, "Not sent. ", retry);
    }

    retry(pending) {
      if (this.pending.get(pending.frame.id) !== pending) return;
      pending.state = "sending";
      pending.item.classList.remove("so-not-sent");
      this.pendingStatus(pending.item, "Sending…");
      this.input.focus();
      this.armSendTimeout(pending);
      if (this.ready) this.transmit(pending);
    }

    /** Send a message; it is kept until its ack says which seq it got. */
    transmit(pending) {
      if (![...this.pending.values()].some((other) => other.sent)) this.seqBeforeUnacked = this.lastSeq;
      pending.sent = true;
      this.ws.send(JSON.stringify(pending.frame));
    }

    /** The server acknowledged one of our messages: show it as the entry it became. */
    acknowledged(frame) {
      const pending = this.pending.get(frame.id);
      if (!pending) return;
      this.pending.delete(frame.id);
      clearTimeout(pending.timer);
      if (pending.item) {
        if (pending.item.contains(document.activeElement)) this.input.focus();
        pending.item.remove();
      }
      if (typeof frame.seq === "number") {
        const sent = pending.frame;
        this.show(
          {
            type: "entry",
            conversation_id: this.saved.conversation_id,
            seq: frame.seq,
            at: Date.now() / 1000,
            sender: "user",
            content_type: sent.content_type,
            content: sent.content,
            metadata: {},
          },
          true,
        );
      }
      if (frame.id === this.endingForNewChat) {
        // The session ended (the ack means it is stored): now forget it and start anew.
        this.endingForNewChat = null;
        this.restart();
      }
    }

    /**
     * Greet: tell the bot the window opened on a conversation with nothing in it yet (never
     * seen a seq: a resumed one replays what it had instead).
     */
    maybeGreet() {
      if (!this.isOpen || !this.ready || this.saved.greeted) return;
      if (this.lastSeq || this.shown.size || this.pending.size) return;
      this.saved.greeted = true;
      this.save();
      this.submit({content_type: "payload", content: {payload: WELCOME}}, true);
    }

    leaveQueue() {
      if (this.mode !== "queued") return;
      this.sendPayload(SESSION_END);
    }

    /** "New chat": at once in the bot's hands; during a session, only once the user confirms. */
    askNewChat() {
      if (this.mode === "bot") {
        this.restart();
        return;
      }
      this.confirmText.textContent =
        this.mode === "live"
          ? `This ends your conversation with ${this.agentName || "the agent"}.`
          : "You will leave the queue.";
      this.confirm.hidden = false;
      this.newChat.setAttribute("aria-expanded", "true");
      this.confirmNo.focus();
    }

    closeConfirm() {
      this.confirm.hidden = true;
      this.newChat.setAttribute("aria-expanded", "false");
      this.newChat.focus();
    }

    confirmNewChat() {
      this.confirm.hidden = true;
      this.newChat.setAttribute("aria-expanded", "false");
      this.input.focus();
      if (this.mode === "bot") {
        this.restart();
        return;
      }
      // End the session as the user does (LIVECHAT_SESSION_END); the new chat starts once the
      // server has it, so the agent is told the conversation ended.
      this.endingForNewChat = this.sendPayload(SESSION_END);
    }

    setOpen(open) {
      this.isOpen = open;
      if (open && this.unread) {
        this.unread = 0;
        this.unreadChanged();
      }
      if (open) this.maybeGreet();
    }

    unreadChanged() {
      if (typeof this.options.onUnread === "function") this.options.onUnread(this.unread);
    }

    userIsTyping() {
      if (!this.ready || this.mode !== "live" || !common.typingDue(this)) return;
      this.ws.send(JSON.stringify({type: "typing"}));
    }

    // -- the connection -------------------------------------------------------------------

    save() {
      try {
        localStorage.setItem(this.storageKey, JSON.stringify(this.saved));
      } catch (_) {
        /* storage full or blocked: the conversation still works, it just won't survive reload */
      }
    }

    async connect() {
      if (this.closed) return;
      this.setConnection(this.attempt ? "Reconnecting…" : "Connecting…", "connecting");
      let url;
      try {
        url = await websocketUrl(this.options);
      } catch (error) {
        this.reconnectSoon();
        return;
      }
      if (this.closed) return;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.addEventListener("open", () => {
        // Messages sent but never acknowledged may have been kept: ask from before them.
        const inFlight = [...this.pending.values()].some((pending) => pending.sent);
        const lastSeq = inFlight ? Math.min(this.lastSeq, this.seqBeforeUnacked) : this.lastSeq;
        const hello = this.saved.resume_token
          ? {type: "hello", v: 1, role: "user", resume_token: this.saved.resume_token, last_seq: lastSeq}
          : {type: "hello", v: 1, role: "user", bot_id: this.bot, metadata: this.metadata};
        ws.send(JSON.stringify(hello));
      });
      ws.addEventListener("message", (event) => this.receive(event.data));
      ws.addEventListener("close", (event) => this.lost(ws, event));
    }

    lost(ws, event) {
      if (ws !== this.ws) return;
      this.ready = false;
      clearInterval(this.pinger);
      if (this.closed) return;
      const refused = event.code === 4401 || event.code === 4404;
      if (refused && this.saved.resume_token) {
        // The saved conversation cannot be resumed: its token expired, it belongs to another
        // server, or the conversation was removed.
        this.forget();
        this.showAlert("Your previous conversation could not be resumed, so a new one was started.");
        this.reconnectSoon(0);
        return;
      }
      if (refused || event.code === 4400) {
        // Retrying would be refused the same way: say so and stop.
        this.setConnection("Unavailable", "offline");
        this.showAlert(`The chat is not available: ${event.reason || `refused (${event.code})`}.`);
        return;
      }
      this.reconnectSoon();
    }

    reconnectSoon(delay) {
      if (this.closed) return;
      clearTimeout(this.retryTimer);
      if (this.ws && this.ws.readyState <= WebSocket.OPEN && delay === 0) return;
      const wait = delay !== undefined ? delay : common.retryDelay(this.attempt);
      this.attempt += 1;
      this.setConnection("Reconnecting…", "offline");
      this.retryTimer = setTimeout(() => this.connect(), wait);
    }

    receive(data) {
      const frame = common.parseFrame(data);
      if (!frame) return;
      switch (frame.type) {
        case "welcome":
          this.welcome(frame);
          break;
        case "entry":
          this.show(frame, true);
          break;
        case "typing":
          if (frame.party === "agent") this.agentTyping();
          break;
        case "queue":
          // Ephemeral: the queue line says where the user stands; nothing goes in the log.
          if (this.root.dataset.mode !== "live") {
            this.queueText = NOTICES.queued(frame);
            this.waitText = frame.agents_available === false ? NOTICES.nobody() : waitWords(frame.estimated_wait);
            this.setMode("queued");
          }
          break;
        case "error":
          this.showRefusal(frame);
          break;
        case "ack":
          this.acknowledged(frame);
          this.showAlert("");
          break;
        default:
          break;
      }
    }

    welcome(frame) {
      if (this.saved.conversation_id && frame.conversation_id !== this.saved.conversation_id) {
        this.forget();
      }
      this.saved.conversation_id = frame.conversation_id;
      this.saved.resume_token = frame.resume_token || this.saved.resume_token;
      this.save();
      this.ready = true;
      this.attempt = 0;
      this.setConnection("Connected", "online");
      this.root.dataset.conversation = frame.conversation_id;
      common.keepAlive(this);
      // What was written offline, or never acknowledged, goes (again) now, in order, with the
      // same ids: one the server already stored is answered with its first ack, not stored twice.
      for (const pending of this.pending.values()) {
        if (pending.state === "sending") this.transmit(pending);
      }
      this.maybeGreet();
    }

    agentTyping() {
      common.showTyping(this, this.typing, `${this.agentName || "The agent"} is typing…`);
    }

    /** Drop the saved conversation (the next hello starts a new one). */
    forget() {
      this.saved = {conversation_id: null, resume_token: null, last_seq: 0, entries: [], greeted: false};
      this.lastSeq = 0;
      this.shown.clear();
      for (const pending of this.pending.values()) clearTimeout(pending.timer);
      this.pending.clear();
      this.endingForNewChat = null;
      this.log.replaceChildren();
      this.setMode("bot", "");
      this.save();
    }

    restart() {
      this.forget();
      this.showAlert("");
      if (this.ws) {
        const old = this.ws;
        this.ws = null;
        this.ready = false;
        old.close(1000, "new chat");
      }
      this.attempt = 0;
      this.connect();
    }

    destroy() {
      this.closed = true;
      clearTimeout(this.retryTimer);
      clearInterval(this.pinger);
      if (this.onOnline) window.removeEventListener("online", this.onOnline);
      if (this.ws) this.ws.close(1000, "widget removed");
    }
  }

  function ensureStyles() {
    if (document.querySelector("link[data-switchover-css]")) return;
    const href = new URL("widget.css", SCRIPT_SRC).href;
    if ([...document.styleSheets].some((sheet) => sheet.href === href)) return;
    const link = document.createElement("link");
    Object.assign(link, {rel: "stylesheet", href});
    link.dataset.switchoverCss = "";
    document.head.append(link);
  }

  /** Mount a chat window into `root`. Options: bot, metadata, title, wsUrl, configUrl. */
  function mount(root, options) {
    if (!root) throw new Error("Switchover.mount needs an element to mount into");
    if (!options || options.css !== false) ensureStyles();
    return new ChatWidget(root, options || {});
  }

  /**
   * A round launcher in the bottom-right corner that opens and closes the chat window, and
   * counts what the bot and the agent said while the window was closed.
   */
  function mountFloating(options) {
    options = options || {};
    // Plain DOM calls: this may run before switchover-common.js has arrived.
    const panel = document.createElement("div");
    Object.assign(panel, {className: "so-floating-panel", id: "switchover-chat", hidden: true});
    const launcher = document.createElement("button");
    Object.assign(launcher, {type: "button", className: "so-launcher"});
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-controls", "switchover-chat");
    const icon = document.createElement("span");
    icon.className = "so-launcher-icon";
    icon.setAttribute("aria-hidden", "true");
    const badge = document.createElement("span");
    badge.className = "so-unread";
    badge.setAttribute("aria-hidden", "true");
    badge.hidden = true;
    launcher.append(icon, badge);
    const openText = options.launcherText || "Open chat";
    let unread = 0;
    const label = () => {
      const open = !panel.hidden;
      const count = unread ? `, ${unread} unread` : "";
      launcher.setAttribute("aria-label", open ? "Close chat" : `${openText}${count}`);
      launcher.title = open ? "Close chat" : openText;
      launcher.dataset.open = String(open);
      badge.textContent = unread > 99 ? "99+" : String(unread);
      badge.hidden = open || !unread;
    };
    let widget = null;
    const toggle = (open) => {
      panel.hidden = !open;
      launcher.setAttribute("aria-expanded", String(open));
      if (widget) widget.setOpen(open);
      label();
      const box = panel.querySelector("textarea");
      if (open && box) box.focus();
    };
    launcher.addEventListener("click", () => toggle(panel.hidden));
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        toggle(false);
        launcher.focus();
      }
    });
    label();
    document.body.append(panel, launcher);
    const onUnread = (count) => {
      unread = count;
      label();
      if (typeof options.onUnread === "function") options.onUnread(count);
    };
    widget = mount(panel, Object.assign({}, options, {open: false, onUnread}));
    return widget;
  }

  window.Switchover = Object.assign(window.Switchover || {}, {mount, mountFloating});
  commonLoaded().catch(() => {
    /* said in the widget's window, where it is mounted */
  });

  if (script && script.dataset.bot) {
    const start = () => {
      let metadata = {};
      try {
        metadata = script.dataset.metadata ? JSON.parse(script.dataset.metadata) : {};
      } catch (_) {
        metadata = {};
      }
      const options = {
        bot: script.dataset.bot,
        metadata,
        title: script.dataset.title,
        wsUrl: script.dataset.wsUrl,
        configUrl: script.dataset.configUrl,
        css: script.dataset.css !== "none",
      };
      const target = script.dataset.target && document.querySelector(script.dataset.target);
      window.Switchover.widget = target ? mount(target, options) : mountFloating(options);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
