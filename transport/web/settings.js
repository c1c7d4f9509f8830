/*
 * Switchover settings: an administrator signs in with their token and changes each bot's
 * livechat settings (timeouts, sign-off wording, agents' capacity...) while the server runs,
 * through the settings API (/api/bots, docs/admin.md). The server checks every value with the
 * config file's rules and words; this page shows its words next to the field concerned.
 * The token lives in sessionStorage only.
 */
(function () {
  "use strict";

  const common = window.SwitchoverCommon;
  const el = common.el;
  const TOKEN_KEY = "switchover:settings:token";

  /** What each known key means; any other key is shown by its name. */
  const LABELS = {
    session_timeout: ["Session timeout", "Seconds without a message between user and agent before the session expires."],
    end_message: ["End message", "The question offered to the user when the agent signs off."],
    end_button_label: ["End button label", "The button under it, which ends the session."],
    queue_timeout: ["Queue timeout", "Seconds a session may wait for an agent. Empty: wait forever."],
    agent_capacity: ["Agents' capacity", "Chats at once for agents who set no capacity of their own."],
    grace_period: ["Grace period", "Seconds an agent who leaves keeps their chats before they go back to the queue."],
    unavailable_message: ["Unavailable message", "Shown to the user when the bot cannot be reached."],
  };

  function $(id) {
    return document.getElementById(id);
  }

  function labelOf(key) {
    const known = LABELS[key];
    if (known) return known[0];
    const words = key.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function shown(value) {
    if (value === null || value === undefined) return "unset";
    return typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value));
  }

  function inputValue(field, value) {
    if (value === null || value === undefined) return "";
    if (field.kind === "string") return value;
    if (field.kind === "other") return JSON.stringify(value);
    return String(value);
  }

  /** The JSON value a field's text stands for; text that is not a number is sent as it is,
   *  so the server says what is wrong with it. */
  function parsed(field, text) {
    if (field.kind === "string") return text;
    const trimmed = text.trim();
    if (trimmed === "" && field.optional) return null;
    if (field.kind === "other") {
      try {
        return JSON.parse(trimmed);
      } catch (error) {
        return text;
      }
    }
    if (trimmed !== "" && /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(trimmed)) return Number(trimmed);
    return text;
  }

  function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function lastChangeText(last) {
    if (!last) return "Not changed here since the config file: every value is the file's.";
    const when = new Date(last.at * 1000).toLocaleString();
    const what = Object.entries(last.changes)
      .map(([key, pair]) => `${labelOf(key)} ${shown(pair.old)} → ${shown(pair.new)}`)
      .join(", ");
    return `Last change by ${last.admin_name} (${last.admin_id}), ${when}: ${what || "none"}.`;
  }

  class SettingsPage {
    constructor() {
      this.token = sessionStorage.getItem(TOKEN_KEY) || "";
      $("signin").addEventListener("submit", (event) => {
        event.preventDefault();
        const token = $("token").value.trim();
        if (!token) return;
        this.token = token;
        sessionStorage.setItem(TOKEN_KEY, token);
        $("token").value = "";
        this.load();
      });
      $("sign-out").addEventListener("click", () => this.signOut(""));
      if (this.token) this.load();
      else this.showSignIn("");
    }

    showSignIn(problem) {
      $("bots").hidden = true;
      $("who").hidden = true;
      $("sign-out").hidden = true;
      $("signin-view").hidden = false;
      $("signin-problem").textContent = problem;
      $("signin-problem").hidden = !problem;
      $("token").focus();
    }

    signOut(problem) {
      this.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      $("bots").replaceChildren();
      this.showSignIn(problem);
    }

    alert(text) {
      $("alert").textContent = text;
      $("alert").hidden = !text;
    }

    async call(method, path, body) {
      const init = {method, headers: {authorization: `Bearer ${this.token}`}};
      if (body !== undefined) {
        init.headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(path, init);
      } catch (error) {
        this.alert("The server cannot be reached. Try again in a moment.");
        return null;
      }
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
      if (response.status === 401 || response.status === 403) {
        this.signOut(
          response.status === 403
            ? "That token is not an administrator's. Agents' tokens open the desk, not this page."
            : "That token was not accepted. Check it and sign in again.",
        );
        return null;
      }
      if (response.status !== 200 && response.status !== 422) {
        this.alert((data && data.message) || `The server answered ${response.status}.`);
        return null;
      }
      this.alert("");
      return {status: response.status, data};
    }

    async load() {
      const answer = await this.call("GET", "/api/bots");
      if (!answer) return;
      const {admin, bots} = answer.data;
      $("signin-view").hidden = true;
      $("who").textContent = `Signed in as ${admin.name}`;
      $("who").hidden = false;
      $("sign-out").hidden = false;
      const main = $("bots");
      main.replaceChildren(...bots.map((view) => this.botCard(view)));
      main.hidden = false;
    }

    botCard(view) {
      const id = `bot-${view.bot_id}`;
      const section = el("section", {class: "bot", id, "aria-labelledby": `${id}-title`});
      this.fill(section, view, "");
      return section;
    }

    /** Draw one bot's card from the API's view of it; ``status`` says what just happened. */
    fill(section, view, status) {
      const id = section.id;
      const inputs = new Map();
      const form = el("form", {class: "settings", novalidate: true, "aria-label": `Settings of ${view.bot_id}`});
      for (const field of view.fields) {
        const fieldId = `${id}-${field.key}`;
        const help = LABELS[field.key] ? LABELS[field.key][1] : field.kind === "other" ? "Written as JSON." : "";
        const changed = view.changed.includes(field.key);
        const fileValue = view.file[field.key];
        const multiline = field.kind === "other" || (field.kind === "string" && view.settings[field.key].length > 60);
        const input = el(multiline ? "textarea" : "input", {
          id: fieldId,
          name: field.key,
          "aria-describedby": `${fieldId}-hint ${fieldId}-error`,
          rows: multiline ? 2 : undefined,
          type: multiline ? undefined : "text",
          inputmode: field.kind === "number" ? "decimal" : field.kind === "integer" ? "numeric" : undefined,
        });
        input.value = inputValue(field, view.settings[field.key]);
        inputs.set(field.key, {field, input});
        form.append(
          el(
            "div",
            {class: "field"},
            el("label", {for: fieldId, text: labelOf(field.key)}),
            input,
            el(
              "p",
              {class: "hint", id: `${fieldId}-hint`},
              help ? `${help} ` : "",
              el("code", {text: field.key}),
              changed
                ? el("span", {class: "changed", text: ` Changed here; the config file says ${shown(fileValue)}.`})
                : " From the config file.",
            ),
            el("p", {class: "error", id: `${fieldId}-error`, hidden: true}),
          ),
        );
      }
      const formError = el("p", {class: "error", role: "alert", hidden: true});
      const statusLine = el("p", {class: "status", role: "status", text: status});
      const save = el("button", {type: "submit", class: "primary", text: "Save"});
      const reset = el("button", {
        type: "button",
        text: "Use the config file's values",
        title: "Forget every change made here: the config file's values count again",
        disabled: view.changed.length === 0,
      });
      form.append(formError, el("div", {class: "buttons"}, save, reset, statusLine));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.save(section, view, inputs, formError, statusLine);
      });
      reset.addEventListener("click", () => this.reset(section, view));
      section.replaceChildren(
        el("h2", {id: `${id}-title`, text: `Bot ${view.bot_id}`}),
        el("p", {class: "last", text: lastChangeText(view.last_change)}),
        form,
      );
    }

    async save(section, view, inputs, formError, statusLine) {
      const body = {};
      for (const [key, {field, input}] of inputs) {
        input.removeAttribute("aria-invalid");
        $(`${input.id}-error`).hidden = true;
        const value = parsed(field, input.value);
        if (!same(value, view.settings[key])) body[key] = value;
      }
      formError.hidden = true;
      if (Object.keys(body).length === 0) {
        statusLine.textContent = "Nothing to save: no value was changed.";
        return;
      }
      statusLine.textContent = "Saving…";
      const answer = await this.call("PATCH", `/api/bots/${encodeURIComponent(view.bot_id)}/settings`, body);
      if (!answer) {
        statusLine.textContent = "";
        return;
      }
      if (answer.status === 422) {
        statusLine.textContent = "";
        let first = null;
        const general = [];
        for (const problem of answer.data.problems) {
          const entry = problem.field ? inputs.get(problem.field) : null;
          if (!entry) {
            general.push(`${problem.key}: ${problem.message}`);
            continue;
          }
          entry.input.setAttribute("aria-invalid", "true");
          const error = $(`${entry.input.id}-error`);
          error.textContent = problem.message;
          error.hidden = false;
          first = first || entry.input;
        }
        if (general.length) {
          formError.textContent = general.join(" ");
          formError.hidden = false;
        }
        if (first) first.focus();
        return;
      }
      this.fill(section, answer.data, "Saved. Open sessions follow it from their next deadline.");
      section.querySelector("button[type=submit]").focus();
    }

    async reset(section, view) {
      const answer = await this.call("DELETE", `/api/bots/${encodeURIComponent(view.bot_id)}/settings`);
      if (!answer || answer.status !== 200) return;
      this.fill(section, answer.data, "Every value is the config file's again.");
      section.querySelector("button[type=submit]").focus();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => new SettingsPage());
  } else {
    new SettingsPage();
  }
})();
