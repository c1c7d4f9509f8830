/*
 * Switchover agent desk: sign in with an agent token, set presence, pick up waiting
 * conversations, and talk to several users at once over Switchover's WebSocket protocol.
 *
 * The token and the chats (their entries, the user's details, the last sequence number seen)
 * live in sessionStorage, so reloading the tab loses nothing: the desk redraws what it had and
 * asks the server, in its hello's last_seqs, for what came after. Entries are keyed by
 * (conversation, seq), so a replayed entry that was already shown is simply dropped.
 *
 * The server does not echo the agent's own messages back to this desk: it acknowledges each
 * with the seq it was given, and the desk files the message under that seq then. If the
 * connection drops before an ack, the next hello asks for that chat from before the message.
 *
 * What it shares with the chat widget (building elements, safe links, the connection's backoff
 * and keep-alive, ordering entries) comes from switchover-common.js, loaded just before it.
 *
 * When the connection drops (the network, or the server restarting) a banner says so and how
 * long the server keeps the agent's chats (the grace period the desk frame gives); once back,
 * it says whether every chat is still there. The server sends each held chat's transcript on
 * every connection, so even a desk that lost its sessionStorage gets its chats back.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "switchover:desk:token";
  const CHATS_KEY = "switchover:desk:chats";
  const SOUND_KEY = "switchover:desk:sound";
  const KEPT_ENTRIES = 300;
  const TITLE = "Switchover desk";

  const common = window.SwitchoverCommon;
  const {el, safeUrl, clock} = common;
  const $ = (id) => document.getElementById(id);

  /**
   * Redraw a list of per-conversation buttons without losing the keyboard's place: the queue
   * and the chat list are redrawn on every desk frame, and a focused button that vanished
   * would drop focus to the page's start.
   */
  function redrawKeepingFocus(list, items) {
    const focused = document.activeElement;
    const holder = focused && list.contains(focused) ? focused.closest("[data-conversation]") : null;
    const id = holder ? holder.dataset.conversation : null;
    list.replaceChildren(...items);
    if (id === null) return;
    for (const node of list.querySelectorAll("[data-conversation]")) {
      if (node.dataset.conversation !== id) continue;
      const button = node.matches("button") ? node : node.querySelector("button");
      if (button) button.focus();
      return;
    }
  }

  /** How long ago, in words: "just now", "5 min ago", "2 h ago". */
  function ago(seconds) {
    const minutes = Math.floor(Math.max(0, seconds) / 60);
    if (minutes < 1) return "just now";
    return minutes < 60 ? `${minutes} min ago` : `${Math.floor(minutes / 60)} h ago`;
  }

  /** An entry in one short line, for the chat list (the page cuts it to the list's width). */
  function summary(entry) {
    const content = entry.content || {};
    if (entry.content_type === "text" && typeof content.text === "string") return content.text.replace(/\s+/g, " ").trim();
    if (typeof content.title === "string" && content.title) return content.title;
    return `[${entry.content_type}]`;
  }

  function waited(seconds) {
    const total = Math.max(0, Math.floor(seconds));
    const minutes = Math.floor(total / 60);
    const rest = String(total % 60).padStart(2, "0");
    return minutes >= 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes}:${rest}`;
  }

  const REASONS = {
    user_ended: "the user ended it",
    idle_timeout: "nobody wrote for too long",
    queue_timeout: "nobody picked it up in time",
    transferred: "sent back to the queue",
    agent_left: "the agent was offline too long",
    agent_closed: "the agent closed it",
  };
  const why = (reason) => REASONS[reason] || String(reason || "").replace(/_/g, " ");

  // The system's lines name agents by their display name; an ordinary ending is one of them,
  // shown as information like the rest (never as an alert).
  const NOTICES = {
    session_started: () => "The user asked for a person.",
    queued: (c) => `Waiting in the queue (position ${c.position}).`,
    agent_joined: (c) => `${c.name || c.agent_id} joined the conversation.`,
    agent_left: (c) =>
      `${c.name || c.agent_id || "The agent"} left (${why(c.reason)}); the chat is back in the queue.`,
    transferred: (c) => `Transferred to ${c.to_name || c.to_agent}.`,
    session_ended: (c) =>
      c.reason === "agent_closed"
        ? `${c.name || "The agent"} ended the session.`
        : c.reason === "user_ended" || !c.reason
          ? "The user ended the session."
          : `The session ended: ${why(c.reason)}.`,
    session_expired: (c) => `The session expired: ${why(c.reason || "idle_timeout")}.`,
  };

  const STATES = {
    live: "Live",
    ended: "Ended",
    expired: "Expired",
    transferred: "Transferred",
    released: "Back in queue",
  };

  /** One chat the agent holds or held: its entries by seq, who the user is, its state. */
  class Chat {
    constructor(id, saved) {
      this.id = id;
      this.botId = (saved && saved.botId) || "";
      this.sessionId = (saved && saved.sessionId) || "";
      this.userId = (saved && saved.userId) || "";
      this.metadata = (saved && saved.metadata) || {};
      this.status = (saved && saved.status) || "live";
      this.detail = (saved && saved.detail) || "";
      this.unread = (saved && saved.unread) || 0;
      this.userConnected = Boolean(saved && saved.userConnected);
      this.userSince = (saved && saved.userSince) || null;
      this.entries = new Map();
      for (const entry of (saved && saved.entries) || []) this.entries.set(entry.seq, entry);
    }

    get lastSeq() {
      let last = 0;
      for (const seq of this.entries.keys()) last = Math.max(last, seq);
      return last;
    }

    get label() {
      const name = this.metadata && (this.metadata.name || this.metadata.email);
      return name ? String(name) : `User ${(this.userId || this.id).slice(0, 6)}`;
    }

    get open() {
      return this.status === "live";
    }

    /** The latest thing the user, the agent or the bot said (not the system's lines). */
    get lastMessage() {
      let last = null;
      for (const entry of this.entries.values()) {
        if (entry.sender === "system" || (last && last.seq > entry.seq)) continue;
        last = entry;
      }
      return last;
    }

    toJSON() {
      const entries = [...this.entries.values()].sort((a, b) => a.seq - b.seq).slice(-KEPT_ENTRIES);
      return {
        id: this.id,
        botId: this.botId,
        sessionId: this.sessionId,
        userId: this.userId,
        metadata: this.metadata,
        status: this.status,
        detail: this.detail,
        unread: this.unread,
        userConnected: this.userConnected,
        userSince: this.userSince,
        entries,
      };
    }
  }

  class Desk {
    constructor() {
      this.token = sessionStorage.getItem(TOKEN_KEY) || "";
      this.chats = new Map();
      this.queue = [];
      this.knownWaiting = new Set();
      this.selected = null;
      this.ws = null;
      this.ready = false;
      this.attempt = 0;
      this.nextId = 1;
      // Ids unique beyond this page: a reused id of a stored message is taken for a resend.
      this.idPrefix = Math.random().toString(36).slice(2, 10);
      this.pending = new Map();
      this.unacked = new Map();
      this.lastTypingSent = 0;
      this.me = null;
      this.colleagues = [];
      this.canned = {};
      this.presence = "offline";
      this.generation = 0;
      // On unless the agent switched it off (remembered in this browser).
      this.sound = localStorage.getItem(SOUND_KEY) !== "off";
      // Since when the connection is lost (ms), and how long the server keeps our chats then.
      this.lostAt = null;
      this.gracePeriod = null;
      this.backPending = false;
      this.bind();
      if (this.token) this.start();
      else this.showSignIn("");
      setInterval(() => this.tick(), 1000);
    }

    // -- wiring the page ------------------------------------------------------------------

    bind() {
      $("signin").addEventListener("submit", (event) => {
        event.preventDefault();
        const token = $("token").value.trim();
        if (!token) return;
        this.token = token;
        sessionStorage.setItem(TOKEN_KEY, token);
        this.askToNotify();
        $("token").value = "";
        this.start();
      });
      $("sign-out").addEventListener("click", () => this.signOut());
      for (const radio of document.querySelectorAll("input[name=presence]")) {
        radio.addEventListener("change", () => {
          this.askToNotify();
          if (radio.checked) this.send({type: "presence", status: radio.value});
        });
      }
      $("sound").checked = this.sound;
      $("sound").addEventListener("change", () => {
        this.sound = $("sound").checked;
        localStorage.setItem(SOUND_KEY, this.sound ? "on" : "off");
        this.askToNotify();
      });
      $("composer").addEventListener("submit", (event) => {
        event.preventDefault();
        this.reply();
      });
      // Before sendOnEnter: while the canned responses are open, Enter picks one.
      $("reply").addEventListener("keydown", (event) => this.cannedKey(event));
      common.sendOnEnter($("reply"), () => this.reply());
      this.addAttachButton();
      $("reply").addEventListener("input", () => {
        this.agentIsTyping();
        this.showCanned();
      });
      $("reply").addEventListener("blur", () => this.hideCanned());
      $("sign-off").addEventListener("click", () => this.act("sign_off"));
      $("end-chat").addEventListener("click", () => this.act("end"));
      $("transfer").addEventListener("click", () => this.transfer());
      $("transfer-to").addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          this.transfer();
        }
      });
      $("close-chat").addEventListener("click", () => this.closeChat(this.selected));
      // Browsers let a page play sound only after something the agent did on it: the first
      // click or key unlocks the tone for the rest of the visit.
      const unlock = () => this.audioReady();
      document.addEventListener("pointerdown", unlock, {once: true});
      document.addEventListener("keydown", unlock, {once: true});
      const seen = () => {
        if (document.visibilityState === "visible" && this.selected) this.markRead(this.selected);
        this.updateTitle();
      };
      document.addEventListener("visibilitychange", seen);
      window.addEventListener("focus", seen);
      window.addEventListener("online", () => {
        if (this.token && (!this.ws || this.ws.readyState > WebSocket.OPEN)) this.connect();
      });
    }

    showSignIn(problem) {
      $("signin-view").hidden = false;
      $("desk-view").hidden = true;
      for (const id of ["presence", "sign-out", "who", "sound-label"]) $(id).hidden = true;
      $("signin-problem").textContent = problem;
      $("signin-problem").hidden = !problem;
      this.lostAt = null;
      this.showReconnecting("", "");
      this.setConnection("Signed out", "offline");
      $("token").focus();
    }

    start() {
      $("signin-view").hidden = true;
      $("desk-view").hidden = false;
      for (const id of ["sign-out", "sound-label"]) $(id).hidden = false;
      const saved = common.readJson(sessionStorage, CHATS_KEY);
      // Nothing of a previous sign-in in this tab (another agent, another server) carries over.
      this.chats.clear();
      this.selected = null;
      this.queue = [];
      this.knownWaiting = new Set();
      this.colleagues = [];
      this.canned = {};
      this.unacked.clear();
      this.claiming = null;
      this.me = null;
      this.presence = "offline";
      this.renderQueue();
      this.renderTeam();
      if (saved && saved.token === this.token) {
        for (const data of saved.chats || []) this.chats.set(data.id, new Chat(data.id, data));
        this.selected = saved.selected && this.chats.has(saved.selected) ? saved.selected : null;
      }
      this.renderChats();
      this.renderSelected();
      this.connect();
    }

    signOut() {
      if (this.ready) this.send({type: "presence", status: "offline"});
      this.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(CHATS_KEY);
      this.chats.clear();
      this.queue = [];
      this.colleagues = [];
      this.selected = null;
      this.disconnect();
      this.renderQueue();
      this.renderChats();
      this.renderTeam();
      this.updateTitle();
      this.showSignIn("");
    }

    save() {
      try {
        sessionStorage.setItem(
          CHATS_KEY,
          JSON.stringify({token: this.token, selected: this.selected, chats: [...this.chats.values()]}),
        );
      } catch (_) {
        /* storage full: the desk keeps working, a reload would show less */
      }
    }

    setConnection(text, state) {
      $("connection").textContent = text;
      $("connection").dataset.state = state;
      document.body.dataset.connection = state;
    }

    showAlert(text) {
      $("alert").textContent = text;
      $("alert").hidden = !text;
      clearTimeout(this.alertTimer);
      if (text) this.alertTimer = setTimeout(() => this.showAlert(""), 8000);
    }

    // -- the connection -------------------------------------------------------------------

    async connect() {
      this.disconnect();
      const generation = this.generation;
      this.setConnection(this.attempt ? "Reconnecting…" : "Connecting…", "connecting");
      let url;
      try {
        url = await common.websocketUrl("/config.json");
      } catch (_) {
        if (generation === this.generation) this.retry();
        return;
      }
      // Signed out, or connecting again, meanwhile: this attempt is no longer wanted.
      if (!this.token || generation !== this.generation) return;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.addEventListener("open", () => {
        const lastSeqs = {};
        for (const chat of this.chats.values()) {
          if (chat.open && Object.keys(lastSeqs).length < 100) lastSeqs[chat.id] = chat.lastSeq;
        }
        // A message sent but never acknowledged may have been kept: ask from before it.
        for (const {frame, seqBefore} of this.unacked.values()) {
          const chatId = frame.conversation_id;
          if (chatId in lastSeqs) lastSeqs[chatId] = Math.min(lastSeqs[chatId], seqBefore);
        }
        const hello = {type: "hello", v: 1, role: "agent", token: this.token};
        if (Object.keys(lastSeqs).length) hello.last_seqs = lastSeqs;
        ws.send(JSON.stringify(hello));
      });
      ws.addEventListener("message", (event) => this.receive(event.data));
      ws.addEventListener("close", (event) => this.lost(ws, event));
    }

    disconnect() {
      this.generation += 1;
      clearTimeout(this.retryTimer);
      clearInterval(this.pinger);
      const old = this.ws;
      this.ws = null;
      this.ready = false;
      if (old && old.readyState <= WebSocket.OPEN) old.close(1000, "bye");
    }

    lost(ws, event) {
      if (ws !== this.ws) return;
      if (this.ready && this.lostAt === null) this.lostAt = Date.now();
      this.ready = false;
      clearInterval(this.pinger);
      if (event.code === 4401) {
        this.token = "";
        sessionStorage.removeItem(TOKEN_KEY);
        this.showSignIn("That token was not accepted. Check it and sign in again.");
        return;
      }
      if (event.code === 4400) this.showAlert(`The server refused the connection: ${event.reason}`);
      this.retry();
    }

    retry() {
      if (!this.token) return;
      clearTimeout(this.retryTimer);
      // While chats are kept for us (the grace period), try at least every 2 to 4 seconds, so
      // that a restarted server finds the desk back well within it.
      const holding = [...this.chats.values()].some((chat) => chat.open);
      const wait = common.retryDelay(holding ? Math.min(this.attempt, 3) : this.attempt);
      this.attempt += 1;
      this.setConnection("Offline — reconnecting…", "offline");
      this.renderReconnecting();
      this.retryTimer = setTimeout(() => this.connect(), wait);
    }

    /**
     * The banner while the connection is lost: the server keeps an agent's chats for the
     * grace period after its connection drops (after a restart, from when it is ready again,
     * so possibly longer than shown), then hands them back to the queue. The sentence changes
     * only when its meaning does, so a screen reader is not read a countdown every second.
     */
    renderReconnecting() {
      if (this.lostAt === null) return;
      const open = [...this.chats.values()].filter((chat) => chat.open).length;
      const grace = this.gracePeriod;
      const left = grace === null ? null : Math.ceil(grace - (Date.now() - this.lostAt) / 1000);
      const chats = open === 1 ? "your chat is" : `your ${open} chats are`;
      let text = "Connection lost. Reconnecting…";
      let countdown = "";
      if (open && left === null) text = `Connection lost. Reconnecting… ${chats} kept for you for a while.`;
      else if (open && left > 0) {
        text = `Connection lost. Reconnecting… ${chats} kept for you for ${Math.round(grace)} s.`;
        countdown = `(${left} s left)`;
      } else if (open) text = "Still reconnecting… your chats may have gone back to the queue.";
      this.showReconnecting(text, countdown, "lost");
    }

    showReconnecting(text, countdown, state) {
      clearTimeout(this.reconnectedTimer);
      const banner = $("reconnecting");
      if ($("reconnecting-text").textContent !== text) $("reconnecting-text").textContent = text;
      $("reconnecting-left").textContent = countdown;
      banner.hidden = !text;
      if (state) banner.dataset.state = state;
      else delete banner.dataset.state;
    }

    /** Back after a lost connection: say so, and whether any chat went back to the queue. */
    renderReconnected(released) {
      this.backPending = false;
      const text = released
        ? `Reconnected. ${released === 1 ? "One chat" : `${released} chats`} went back to the queue while you were away.`
        : "Reconnected. Your chats are here.";
      this.showReconnecting(text, "", "back");
      this.reconnectedTimer = setTimeout(() => this.showReconnecting("", ""), 8000);
    }

    send(frame) {
      if (!this.ready) {
        this.showAlert("Not connected right now; try again in a moment.");
        return null;
      }
      const id = `d${this.idPrefix}-${this.nextId++}`;
      if (frame.type === "message") {
        const chat = this.chats.get(frame.conversation_id);
        this.unacked.set(id, {frame, seqBefore: chat ? chat.lastSeq : 0});
      }
      this.ws.send(JSON.stringify(Object.assign({id}, frame)));
      return id;
    }

    /** The server acknowledged one of our messages: file it as the entry it became. */
    acknowledged(ack) {
      const sent = this.unacked.get(ack.id);
      if (!sent) return;
      this.unacked.delete(ack.id);
      if (typeof ack.seq !== "number") return;
      const frame = sent.frame;
      this.entry(
        {
          type: "entry",
          conversation_id: frame.conversation_id,
          seq: ack.seq,
          at: Date.now() / 1000,
          sender: "agent",
          agent_id: this.me ? this.me.id : undefined,
          content_type: frame.content_type,
          content: frame.content,
          metadata: {},
        },
        true,
      );
    }

    receive(data) {
      const frame = common.parseFrame(data);
      if (!frame) return;
      const handler = {
        welcome: () => this.welcome(frame),
        desk: () => this.desk(frame),
        entry: () => this.entry(frame, true),
        transcript: () => this.transcript(frame),
        typing: () => this.userTyping(frame),
        error: () => this.showRefusal(frame),
        ack: () => this.acknowledged(frame),
      }[frame.type];
      if (handler) handler();
    }

    welcome(frame) {
      this.unacked.clear();  // what the last connection left unacknowledged comes in the replay
      this.ready = true;
      this.attempt = 0;
      this.me = {id: frame.agent_id, name: frame.name || frame.agent_id};
      this.setConnection("Connected", "online");
      if (this.lostAt !== null) {
        this.lostAt = null;
        this.backPending = true;
        this.showReconnecting("Reconnected.", "", "back");
        this.reconnectedTimer = setTimeout(() => this.showReconnecting("", ""), 8000);
      }
      $("who").textContent = `Signed in as ${this.me.name}`;
      $("who").hidden = false;
      $("presence").hidden = false;
      this.renderSelected();
      common.keepAlive(this);
    }

    // -- what the server says -------------------------------------------------------------

    desk(frame) {
      for (const radio of document.querySelectorAll("input[name=presence]")) {
        radio.checked = radio.value === frame.presence;
      }
      document.body.dataset.presence = frame.presence;
      this.presence = frame.presence;
      this.canned = frame.canned_responses || {};
      if (typeof frame.grace_period === "number") this.gracePeriod = frame.grace_period;
      const held = new Set();
      let arrived = null;
      for (const item of frame.chats || []) {
        held.add(item.conversation_id);
        let chat = this.chats.get(item.conversation_id);
        if (!chat) {
          chat = new Chat(item.conversation_id);
          this.chats.set(chat.id, chat);
          arrived = chat;
        } else if (!chat.open) {
          arrived = chat;
        }
        chat.botId = item.bot_id;
        chat.sessionId = item.session_id;
        chat.status = "live";
        chat.detail = item.grace_until ? "reconnecting" : "";
        chat.userConnected = Boolean(item.user_connected);
        chat.userSince = typeof item.user_since === "number" ? item.user_since : null;
      }
      let released = 0;
      for (const chat of this.chats.values()) {
        if (chat.open && !held.has(chat.id)) {
          chat.status = "released";
          released += 1;
        }
      }
      if (this.backPending) this.renderReconnected(released);
      $("capacity").textContent = `${held.size}/${frame.capacity}`;
      const waiting = frame.queue || [];
      const fresh = waiting.filter((item) => !this.knownWaiting.has(item.conversation_id));
      this.knownWaiting = new Set(waiting.map((item) => item.conversation_id));
      this.queue = waiting;
      this.colleagues = frame.colleagues || [];
      if (fresh.length || arrived) this.ding();
      if (arrived && !this.selected) this.select(arrived.id);
      if (arrived && !this.looking(arrived)) {
        arrived.unread += 1;
        this.notify("New chat assigned", arrived.label, arrived.id);
      } else if (fresh.length) {
        const first = fresh[0];
        this.notify("New chat waiting", first.user_name || first.last_message || first.bot_id, null);
      }
      this.renderQueue();
      this.renderChats();
      this.renderTeam();
      this.renderSelected();
      this.save();
    }

    transcript(frame) {
      let chat = this.chats.get(frame.conversation_id);
      if (!chat) {
        chat = new Chat(frame.conversation_id);
        this.chats.set(chat.id, chat);
      }
      chat.botId = frame.bot_id;
      chat.sessionId = frame.session_id;
      chat.userId = frame.user_id;
      chat.metadata = frame.user_metadata || {};
      for (const entry of frame.entries || []) {
        this.entry(Object.assign({conversation_id: frame.conversation_id}, entry), false);
      }
      chat.status = "live";
      chat.detail = "";
      const shown = this.chats.get(this.selected);
      if (!shown || !shown.open) this.select(chat.id);
      this.renderChats();
      this.renderSelected();
      // The transcript goes before what arrived live (the "joined" line): show its end.
      if (this.selected === chat.id) this.scrollToNewest();
      this.save();
      if (this.claiming === chat.id) {
        // The agent picked this one up: take them to it, ready to reply.
        this.claiming = null;
        if (this.selected !== chat.id) this.select(chat.id);
        $("reply").focus();
      }
    }

    /** Add one entry (live, replayed or from a transcript), once. */
    entry(entry, live) {
      let chat = this.chats.get(entry.conversation_id);
      if (!chat) {
        chat = new Chat(entry.conversation_id);
        this.chats.set(chat.id, chat);
      }
      if (typeof entry.seq !== "number" || chat.entries.has(entry.seq)) return;
      chat.entries.set(entry.seq, entry);
      // A transcript holds notices of earlier sessions too: only live ones change the state.
      // Only the system's notices change it: anything else shaped like one is its sender's.
      if (live && entry.content_type === "notice" && entry.sender === "system") this.followNotice(chat, entry.content || {});
      const looking = this.looking(chat);
      if (live && entry.sender === "user") {
        if (!looking) chat.unread += 1;
        if (!looking || !document.hasFocus()) this.ding();
        this.notify(chat.label, summary(entry), chat.id);
        if (this.selected === chat.id) $("chat-typing").hidden = true;
      }
      if (this.selected === chat.id) this.place(entry);
      if (live) {
        this.renderChats();
        if (this.selected === chat.id) this.renderState(chat);
        this.save();
      }
    }

    followNotice(chat, content) {
      const mine = this.me && content.agent_id === this.me.id;
      if (content.code === "session_ended") [chat.status, chat.detail] = ["ended", content.reason || ""];
      else if (content.code === "session_expired") [chat.status, chat.detail] = ["expired", content.reason || ""];
      else if (content.code === "transferred" && !(this.me && content.to_agent === this.me.id)) {
        [chat.status, chat.detail] = ["transferred", content.to_agent || ""];
      }
      else if (content.code === "agent_left" && (mine || !this.me)) [chat.status, chat.detail] = ["released", content.reason || ""];
      else if (content.code === "agent_joined" && mine) [chat.status, chat.detail] = ["live", ""];
    }

    userTyping(frame) {
      const chat = this.chats.get(frame.conversation_id);
      if (frame.party !== "user" || !chat || frame.conversation_id !== this.selected) return;
      common.showTyping(this, $("chat-typing"), `${chat.label} is typing…`);
    }

    showRefusal(frame) {
      if (frame.id !== undefined) this.unacked.delete(frame.id);
      this.claiming = null;
      const what = frame.message || "The server refused that.";
      this.showAlert(`${what} (${frame.code})`);
    }

    // -- what the agent does --------------------------------------------------------------

    reply() {
      const chat = this.chats.get(this.selected);
      const text = $("reply").value.trim();
      if (!chat || !chat.open || !text) return;
      if (this.send({type: "message", conversation_id: chat.id, content_type: "text", content: {text}})) {
        $("reply").value = "";
      }
      $("reply").focus();
    }

    act(type, extra) {
      const chat = this.chats.get(this.selected);
      if (!chat || !chat.open) return;
      this.send(Object.assign({type, conversation_id: chat.id}, extra || {}));
      if (type === "transfer") $("transfer-to").value = "";
    }

    /** Transfer the selected chat to the colleague chosen, or back to the queue. */
    transfer() {
      const choice = $("transfer-to").selectedOptions[0];
      if (!choice || (!choice.value && !choice.dataset.queue)) {
        this.showAlert("Choose a colleague to transfer to, or Back to the queue.");
        $("transfer-to").focus();
        return;
      }
      this.act("transfer", {to_agent: choice.dataset.queue ? null : choice.value});
    }

    agentIsTyping() {
      const chat = this.chats.get(this.selected);
      if (!this.ready || !chat || !chat.open || !common.typingDue(this)) return;
      this.ws.send(JSON.stringify({type: "typing", conversation_id: chat.id}));
    }

    claim(conversationId) {
      if (this.send({type: "claim", conversation_id: conversationId})) this.claiming = conversationId;
    }

    select(id) {
      this.reopened = true;  // opening a chat (even the one shown) shows its newest message
      this.selected = id;
      this.markRead(id);
      this.renderChats();
      this.renderSelected();
      this.save();
    }

    markRead(id) {
      const chat = this.chats.get(id);
      if (chat && chat.unread) {
        chat.unread = 0;
        this.renderChats();
        this.save();
      }
      this.updateTitle();
    }

    closeChat(id) {
      this.chats.delete(id);
      this.selected = null;
      const next = [...this.chats.values()].find((chat) => chat.open);
      if (next) this.select(next.id);
      this.renderChats();
      this.renderSelected();
      this.save();
    }

    /** Whether the agent has this chat in front of them. */
    looking(chat) {
      return this.selected === chat.id && document.visibilityState === "visible";
    }

    /** Ask for desktop notifications once, on a gesture of the agent (browsers require one). */
    askToNotify() {
      if (!("Notification" in window) || Notification.permission !== "default") return;
      try {
        const asked = Notification.requestPermission();
        if (asked && asked.catch) asked.catch(() => {});
      } catch (_) {
        /* an older browser: no desktop notifications */
      }
    }

    /** A desktop notification, only while the page is hidden; clicking it opens the chat. */
    notify(title, body, chatId) {
      if (document.visibilityState !== "hidden" || !("Notification" in window)) return;
      if (Notification.permission !== "granted") return;
      try {
        const shown = new Notification(title, {body: String(body || "").slice(0, 200), tag: chatId || "switchover-queue"});
        shown.onclick = () => {
          window.focus();
          if (chatId && this.chats.has(chatId)) this.select(chatId);
          shown.close();
        };
      } catch (_) {
        /* notifications not allowed here: the title and the sound still say it */
      }
    }

    // -- canned responses -----------------------------------------------------------------

    /** The open chat's bot's canned responses matching what follows "/" in the reply box. */
    cannedMatches() {
      const chat = this.chats.get(this.selected);
      const typed = /^\/([^\s]*)$/.exec($("reply").value);
      if (!chat || !chat.open || !typed) return [];
      const query = typed[1].toLowerCase();
      return (this.canned[chat.botId] || []).filter(
        (c) => c.shortcut.toLowerCase().includes(query) || c.text.toLowerCase().includes(query),
      );
    }

    showCanned() {
      const matches = this.cannedMatches();
      const value = $("reply").value;
      if (!matches.length || this.cannedDismissed === value) {
        this.hideCanned();
        return;
      }
      this.cannedDismissed = null;
      const same = this.cannedShown && this.cannedShown.map((c) => c.shortcut).join() === matches.map((c) => c.shortcut).join();
      if (!same) this.cannedIndex = 0;
      this.cannedShown = matches;
      const list = $("canned");
      list.replaceChildren(
        ...matches.map((c, index) =>
          el(
            "li",
            {
              id: `canned-${index}`,
              role: "option",
              class: "canned-option",
              "aria-selected": index === this.cannedIndex ? "true" : "false",
              // mousedown, not click: the reply box keeps the focus.
              onmousedown: (event) => {
                event.preventDefault();
                this.insertCanned(index);
              },
            },
            el("span", {class: "canned-shortcut", text: `/${c.shortcut}`}),
            el("span", {class: "canned-text", text: c.text}),
          ),
        ),
      );
      list.hidden = false;
      $("reply").setAttribute("aria-expanded", "true");
      $("reply").setAttribute("aria-activedescendant", `canned-${this.cannedIndex}`);
      $("canned-status").textContent = `${matches.length} canned ${matches.length === 1 ? "response" : "responses"}: up and down to choose, Enter to insert, Escape to close.`;
      list.querySelector(`#canned-${this.cannedIndex}`).scrollIntoView({block: "nearest"});
    }

    hideCanned() {
      this.cannedShown = null;
      $("canned").hidden = true;
      $("canned").replaceChildren();
      $("reply").setAttribute("aria-expanded", "false");
      $("reply").removeAttribute("aria-activedescendant");
      $("canned-status").textContent = "";
    }

    cannedKey(event) {
      if (!this.cannedShown || event.isComposing) return;
      const count = this.cannedShown.length;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        this.cannedIndex = (this.cannedIndex + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
        this.showCanned();
      } else if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") {
        this.insertCanned(this.cannedIndex);
      } else if (event.key === "Escape") {
        this.cannedDismissed = $("reply").value;
        this.hideCanned();
      } else {
        return;
      }
      event.preventDefault();
      event.stopImmediatePropagation();
    }

    insertCanned(index) {
      const chosen = this.cannedShown && this.cannedShown[index];
      if (!chosen) return;
      const reply = $("reply");
      reply.value = chosen.text;
      this.hideCanned();
      reply.focus();
      reply.setSelectionRange(reply.value.length, reply.value.length);
    }

    /** The page's audio, created (or resumed) when allowed. */
    audioReady() {
      try {
        this.audio = this.audio || new AudioContext();
        if (this.audio.state === "suspended") this.audio.resume().catch(() => {});
      } catch (_) {
        /* no audio here: the title and notifications still say it */
      }
    }

    ding() {
      this.updateTitle();
      if (!this.sound) return;
      try {
        this.audioReady();
        const tone = this.audio.createOscillator();
        const gain = this.audio.createGain();
        tone.frequency.value = 880;
        gain.gain.setValueAtTime(0.15, this.audio.currentTime);
        gain.gain.exponentialRampToValueAtTime(0.001, this.audio.currentTime + 0.3);
        tone.connect(gain).connect(this.audio.destination);
        tone.start();
        tone.stop(this.audio.currentTime + 0.3);
      } catch (_) {
        /* no audio here: the title badge still shows */
      }
    }

    // -- drawing --------------------------------------------------------------------------

    updateTitle() {
      let count = this.queue.length;
      for (const chat of this.chats.values()) count += chat.unread;
      document.title = count ? `(${count}) ${TITLE}` : TITLE;
    }

    tick() {
      this.renderReconnecting();
      const now = Date.now() / 1000;
      for (const span of document.querySelectorAll("[data-since]")) {
        span.textContent = waited(now - Number(span.dataset.since));
      }
      for (const span of document.querySelectorAll("[data-left-since]")) {
        span.textContent = `User left ${ago(now - Number(span.dataset.leftSince))}`;
      }
    }

    /** Whether the user of a chat is there: "User connected (since 10:32)", "User left 5 min ago". */
    renderUser(chat) {
      const line = $("chat-user");
      delete line.dataset.leftSince;
      line.hidden = !chat.open;
      line.dataset.connected = chat.userConnected ? "yes" : "no";
      if (chat.userConnected) {
        line.textContent = chat.userSince ? `User connected (since ${clock(chat.userSince)})` : "User connected";
      } else if (chat.userSince) {
        line.dataset.leftSince = String(chat.userSince);
        line.textContent = `User left ${ago(Date.now() / 1000 - chat.userSince)}`;
      } else {
        line.textContent = "User not connected";
      }
    }

    renderQueue() {
      const list = $("queue");
      const now = Date.now() / 1000;
      // An offline agent cannot take chats: going Online or Away first is the way.
      const offline = this.presence === "offline";
      redrawKeepingFocus(
        list,
        this.queue.map((item) => {
          const wait = el("span", {class: "wait", "data-since": item.queued_at, text: waited(now - item.queued_at)});
          const name = item.user_name || "Visitor";
          const last = item.last_message
            ? el(
                "span",
                {class: "last"},
                el("span", {class: "last-message", text: item.last_message}),
                el("time", {class: "last-time", text: clock(item.last_message_at)}),
              )
            : el("span", {class: "last last-none", text: "No message yet"});
          return el(
            "li",
            {class: "queue-item", "data-conversation": item.conversation_id},
            el(
              "div",
              {class: "queue-what"},
              el("strong", {class: "queue-name", text: name}),
              last,
              el("span", {class: "waited"}, `#${item.position} · ${item.bot_id} · waiting `, wait),
            ),
            el("button", {
              type: "button",
              class: "primary pick-up",
              text: "Pick up",
              disabled: offline,
              "aria-describedby": offline ? "queue-offline" : null,
              "aria-label": `Pick up ${name}, number ${item.position} in the queue (${item.bot_id})`,
              onclick: () => this.claim(item.conversation_id),
            }),
          );
        }),
      );
      $("queue-offline").hidden = !offline || this.queue.length === 0;
      $("queue-count").textContent = String(this.queue.length);
      $("queue-empty").hidden = this.queue.length > 0;
      this.updateTitle();
    }

    /** Who else serves these bots, online first: whom a chat could be transferred to. */
    renderTeam() {
      const order = {online: 0, away: 1, offline: 2};
      const team = [...this.colleagues].sort((a, b) => order[a.presence] - order[b.presence]);
      const presence = {online: "Online", away: "Away", offline: "Offline"};
      $("team").replaceChildren(
        ...team.map((c) =>
          el(
            "li",
            {class: `teammate presence-${c.presence}`, "data-agent": c.agent_id},
            el("span", {class: "teammate-name", text: c.name}),
            el("span", {
              class: "teammate-state",
              text: c.presence === "online" ? `${presence.online}, ${c.free_slots} free` : presence[c.presence] || c.presence,
            }),
          ),
        ),
      );
      $("team-count").textContent = `${team.filter((c) => c.presence === "online").length} online`;
      $("team-count").hidden = team.length === 0;
      $("team-empty").hidden = team.length > 0;
    }

    renderChats() {
      const list = $("chats");
      const chats = [...this.chats.values()];
      redrawKeepingFocus(
        list,
        chats.map((chat) => {
          const badge = chat.unread
            ? el("span", {class: "badge", text: String(chat.unread), "aria-label": `${chat.unread} unread`})
            : null;
          return el(
            "li",
            {},
            el(
              "button",
              {
                type: "button",
                class: `chat-tab state-${chat.status}`,
                "data-conversation": chat.id,
                "aria-current": chat.id === this.selected ? "true" : false,
                onclick: () => this.select(chat.id),
              },
              el("span", {class: "chat-name", text: chat.label}),
              this.lastLine(chat),
              el(
                "span",
                {class: "chat-status"},
                STATES[chat.status] || chat.status,
                chat.open
                  ? el("span", {class: `user-state user-${chat.userConnected ? "here" : "gone"}`, text: chat.userConnected ? "Connected" : "Left"})
                  : null,
              ),
              badge,
            ),
          );
        }),
      );
      $("chats-empty").hidden = chats.length > 0;
      this.updateTitle();
    }

    /** The chat's last message (who said it when it was not the user) and its time. */
    lastLine(chat) {
      const last = chat.lastMessage;
      if (!last) return el("span", {class: "last last-none", text: "No message yet"});
      const mine = last.sender === "agent" && this.me && last.agent_id === this.me.id;
      const who = mine ? "You: " : last.sender === "bot" ? "Bot: " : last.sender === "agent" ? `${this.agentName(last.agent_id)}: ` : "";
      const said = last.content_type === "payload" ? this.clicked(last) : summary(last);
      return el(
        "span",
        {class: "last"},
        el("span", {class: "last-message", text: `${who}${said}`}),
        el("time", {class: "last-time", text: clock(last.at)}),
      );
    }

    /** An agent's display name, from what the desk knows of its colleagues and notices. */
    agentName(agentId) {
      if (!agentId) return "Agent";
      if (this.me && agentId === this.me.id) return this.me.name;
      const colleague = this.colleagues.find((c) => c.agent_id === agentId);
      return colleague ? colleague.name : (this.agentNames && this.agentNames[agentId]) || agentId;
    }

    /**
     * The transfer choices: colleagues online (those with no free slot shown but not
     * selectable, so it is clear why), then back to the queue. The list is redrawn only when
     * it changes, so an open list is not snatched away by an unrelated desk frame, and the
     * choice made survives redraws.
     */
    renderColleagues() {
      const select = $("transfer-to");
      const online = this.colleagues.filter((c) => c.presence === "online");
      const roster = JSON.stringify(online.map((c) => [c.agent_id, c.name, c.free_slots]));
      if (select.dataset.roster === roster) return;
      select.dataset.roster = roster;
      const kept = select.value;
      const keptQueue = Boolean(select.selectedOptions[0] && select.selectedOptions[0].dataset.queue);
      const options = [el("option", {value: "", text: online.length ? "Choose…" : "No colleague online"})];
      for (const colleague of online) {
        const full = colleague.free_slots < 1;
        const slots = full ? "no free slot" : `${colleague.free_slots} free`;
        options.push(
          el("option", {value: colleague.agent_id, disabled: full, text: `${colleague.name} (${slots})`})
        );
      }
      options.push(el("option", {value: "", "data-queue": "1", text: "Back to the queue"}));
      select.replaceChildren(...options);
      const again = keptQueue
        ? options[options.length - 1]
        : options.find((option) => kept && option.value === kept && !option.disabled);
      if (again) again.selected = true;
    }

    renderSelected() {
      const chat = this.chats.get(this.selected);
      $("no-chat").hidden = Boolean(chat);
      $("chat-view").hidden = !chat;
      if (!chat) {
        delete $("chat-log").dataset.conversation;
        return;
      }
      $("chat-view").dataset.conversation = chat.id;
      $("chat-title").textContent = chat.label;
      const meta = $("chat-meta");
      const rows = Object.assign({}, chat.metadata, {bot: chat.botId, user_id: chat.userId});
      meta.replaceChildren();
      for (const [key, value] of Object.entries(rows)) {
        if (value === "" || value === undefined || value === null) continue;
        const shown = typeof value === "object" ? JSON.stringify(value) : String(value);
        meta.append(el("dt", {text: key}), el("dd", {text: shown}));
      }
      // Redraw the log only for another chat: it is a live region, and drawing the same
      // entries again would have a screen reader read the whole conversation out again.
      // (Entries of the chat shown are placed as they come, by entry.)
      const log = $("chat-log");
      const opened = log.dataset.conversation !== chat.id || this.reopened;
      this.reopened = false;
      if (log.dataset.conversation !== chat.id) {
        log.dataset.conversation = chat.id;
        log.replaceChildren();
        for (const entry of [...chat.entries.values()].sort((a, b) => a.seq - b.seq)) this.place(entry);
      }
      if (opened) this.scrollToNewest();
      $("chat-typing").hidden = true;
      this.renderState(chat);
    }

    renderState(chat) {
      this.renderUser(chat);
      const state = $("chat-state");
      state.textContent = STATES[chat.status] || chat.status;
      state.className = `state state-${chat.status}`;
      $("chat-view").dataset.status = chat.status;
      const open = chat.open;
      for (const id of ["reply", "sign-off", "end-chat", "transfer", "transfer-to"]) $(id).disabled = !open;
      this.renderColleagues();
      $("composer").querySelector("button").disabled = !open;
      $("close-chat").hidden = open;
      if (this.attachButton) this.attachButton.disabled = !open;
      const ended = $("chat-ended");
      ended.hidden = open;
      const words = {
        ended: `The session has ended (${why(chat.detail || "user_ended")}); the bot has the conversation again.`,
        expired: `The session expired (${why(chat.detail || "idle_timeout")}); the bot has the conversation again.`,
        transferred: `You transferred this chat${chat.detail ? ` to ${chat.detail}` : ""}.`,
        released: "This chat went back to the queue.",
      };
      ended.textContent = open ? "" : words[chat.status] || "";
    }

    /** Put an entry of the selected chat in the log, in seq order. */
    place(entry) {
      const log = $("chat-log");
      if (common.placeInOrder(log, this.renderEntry(entry), entry.seq)) log.scrollTop = log.scrollHeight;
    }

    /** Show the newest message of the open chat, now and once the page has laid it out. */
    scrollToNewest() {
      const log = $("chat-log");
      log.scrollTop = log.scrollHeight;
      requestAnimationFrame(() => {
        log.scrollTop = log.scrollHeight;
      });
    }

    /** The label of the button the user clicked, found in the questions shown before it. */
    buttonTitle(entry, payload) {
      const chat = this.chats.get(entry.conversation_id);
      const earlier = chat ? [...chat.entries.values()].filter((e) => e.seq < entry.seq) : [];
      earlier.sort((a, b) => b.seq - a.seq);
      for (const shown of earlier) {
        for (const button of common.buttonsOf(shown.content)) {
          if (button.payload === payload && button.title) return button.title;
        }
      }
      return String(payload);
    }

    // -- attachments (switchover-common.js draws and sends them) ---------------------------

    attachmentOptions() {
      return {
        base: new URL("/", location.href).href,
        token: () => this.token,
        drawn: () => {
          const log = $("chat-log");
          log.scrollTop = log.scrollHeight;
        },
        disabled: () => {
          const chat = this.chats.get(this.selected);
          return !chat || !chat.open;
        },
      };
    }

    /** The paperclip in the reply box, for the selected chat. */
    addAttachButton() {
      const files = window.SwitchoverAttachments;
      if (!files) return;
      const {button, input} = files.button(this.attachmentOptions(), (file) => this.sendFile(file));
      this.attachButton = button;
      const composer = $("composer");
      composer.insertBefore(input, composer.querySelector("button"));
      composer.insertBefore(button, composer.querySelector("button"));
    }

    sendFile(file) {
      const chat = this.chats.get(this.selected);
      if (!chat || !chat.open) return Promise.resolve();
      return window.SwitchoverAttachments.upload(this.attachmentOptions(), chat.id, file).then(
        () => $("reply").focus(),
        (error) => this.showAlert(error.message),
      );
    }

    /** Draw an attachment Switchover stored in place of the entry's summary. */
    drawAttachment(entry, body) {
      const files = window.SwitchoverAttachments;
      const attachment = files && files.attachmentOf(entry);
      if (attachment) body.replaceChildren(files.render(attachment, this.attachmentOptions()));
    }

    /** Agents' names seen in notices, for agents who are not colleagues any more. */
    /** What a payload the user sent reads as: the button clicked, or the widget opening. */
    clicked(entry) {
      const payload = (entry.content || {}).payload;
      // The widget greets on open by sending this as the user (see widget.js).
      if (payload === "CONVERSATION_START") return "opened the chat";
      return `clicked “${this.buttonTitle(entry, payload)}”`;
    }

    learnNames(content) {
      this.agentNames = this.agentNames || {};
      if (content.agent_id && content.name) this.agentNames[content.agent_id] = content.name;
      if (content.to_agent && content.to_name) this.agentNames[content.to_agent] = content.to_name;
    }

    renderEntry(entry) {
      const content = entry.content || {};
      if (entry.content_type === "notice" && entry.sender === "system") {
        this.learnNames(content);
        const describe = NOTICES[content.code];
        return el("li", {class: `entry notice notice-${content.code}`, text: describe ? describe(content) : content.code});
      }
      const mine = entry.sender === "agent" && this.me && entry.agent_id === this.me.id;
      const who = mine
        ? "You"
        : {user: "User", bot: "Bot", agent: this.agentName(entry.agent_id), system: "System"}[entry.sender] || entry.sender;
      const body = el("div", {class: "bubble"});
      const type = entry.content_type;
      if (type === "text") body.append(content.text || "");
      else if (type === "payload") body.append(el("em", {text: this.clicked(entry)}));
      else if (type === "question") {
        body.append(content.title || "");
        const choices = common.buttonsOf(content);
        body.append(el("div", {class: "choices"}, ...choices.map((c) => el("span", {class: "chip", text: c.title || c.payload}))));
        if (entry.metadata && entry.metadata.sign_off) body.classList.add("sign-off");
      } else if (["image", "url", "file", "audio", "video"].includes(type)) {
        const href = safeUrl(content.url);
        const text = content.title || content.text || content.url || type;
        body.append(href ? el("a", {href, target: "_blank", rel: "noopener noreferrer", text: `${type}: ${text}`}) : text);
      } else if (typeof content.text === "string") body.append(content.text);
      else body.append(el("em", {text: `[${type}]`}));
      this.drawAttachment(entry, body);
      return el(
        "li",
        {class: `entry from-${entry.sender}${mine ? " mine" : ""}`},
        el("span", {class: "who", text: who}),
        body,
        el("time", {class: "time", text: clock(entry.at)}),
      );
    }
  }

  window.switchoverDesk = new Desk();
})();
