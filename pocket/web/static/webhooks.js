// The console's Webhooks card: each subscription with where its deliveries
// stand (GET /admin/webhooks, at each refresh of the console), its parked
// deliveries, a replay from a position of the log, and unsubscribing; and the
// form that subscribes a receiver, whose secret is shown this once.

import { NoAnswer, errorOf, integerOrText, jsonText } from "./api.js";
import { clearMessages, handleForm, showMessage } from "./forms.js";

const $ = (id) => document.getElementById(id);
const NUMBER = new Intl.NumberFormat("en-US");
const fmt = (n) => NUMBER.format(n);
const SHOWN_PARKED = 20; // parked deliveries listed under a subscription
const MOST_PARKED = 500; // read to find the first one (the API's largest page)

/**
 * The card. api(method, path, options) calls the API with the admin token;
 * since(unixSeconds) says a moment for a person ("21:40:03 (4 s ago)");
 * fact(list, key, name, text, className) adds a fact to a list as the rest
 * of the console shows them.
 */
export function webhooksPanel({ api, since, fact }) {
  const items = new Map(); // subscription id -> {item, status}, kept across refreshes (their forms with them)
  let latest = 0; // the last read of the list started: older ones do not draw over it

  subscribeForm();
  $("webhook-secret-done").addEventListener("click", forgetSecret);
  $("webhook-secret-copy").addEventListener("click", copySecret);

  /** Reads the subscriptions and shows them; what went wrong is said in the card. */
  async function load() {
    latest += 1;
    const mine = latest;
    let result;
    try {
      result = await api("GET", "/admin/webhooks");
    } catch (error) {
      if (!(error instanceof NoAnswer)) throw error;
      if (mine === latest) problem(`Could not read the subscriptions: no answer (${error.message}).`);
      return;
    }
    if (mine !== latest) return;
    if (!result.ok) {
      problem(`Could not read the subscriptions: ${errorOf(result).message}`);
      return;
    }
    problem("");
    show(result.data.webhooks);
  }

  function show(webhooks) {
    const ids = new Set(webhooks.map((status) => status.id));
    for (const [id, entry] of items) {
      if (!ids.has(id)) {
        entry.item.remove();
        items.delete(id);
      }
    }
    const wanted = webhooks.map((status) => {
      const entry = items.get(status.id) || added(status);
      entry.status = status;
      drawFacts(entry);
      return entry.item;
    });
    const list = $("webhook-list");
    // Moving an item would take the focus from its field: only when the order changed.
    if (wanted.some((item, n) => list.children[n] !== item)) list.replaceChildren(...wanted);
    $("webhooks-empty").hidden = webhooks.length > 0;
  }

  /** Greys the list (its figures are from before) and says why; "" clears it. */
  function problem(text) {
    $("webhooks-problem").textContent = text;
    $("webhooks-problem").hidden = !text;
    $("webhook-list").classList.toggle("stale", Boolean(text));
  }

  /** What the card says of an action whose form may be gone since (a deletion). */
  function say(text, kind) {
    const note = $("webhooks-message");
    note.textContent = text;
    note.dataset.kind = kind;
    note.hidden = !text;
  }

  /** Signed out: nothing of the last admin's stays, the secret least of all. */
  function clear() {
    latest += 1;
    items.clear();
    $("webhook-list").replaceChildren();
    forgetSecret();
    say("", "ok");
    problem("");
    clearMessages($("webhook-subscribe"));
    $("webhook-subscribe").reset();
  }

  // Subscribing, and the secret shown once

  function subscribeForm() {
    const form = $("webhook-subscribe");
    const all = $("webhook-all-events");
    // "All of them" stands for every type: the single types are chosen only without it.
    const showChoice = () => {
      for (const box of form.querySelectorAll("[data-event]")) box.disabled = all.checked;
    };
    all.addEventListener("change", showChoice);
    form.addEventListener("reset", () => setTimeout(showChoice)); // after the reset itself
    showChoice();
    handleForm(form, {
      send: (values) => unkeyed(() => api("POST", "/admin/webhooks", { body: jsonText(subscription(values)) })),
      done: async (data) => {
        const { webhook } = data;
        showSecret(webhook);
        showMessage(form, `Subscribed ${webhook.url}.`, "ok");
        await load();
      },
      fieldFor: { user_not_found: "user_id" },
    });
  }

  /** The request's body: only the fields given; events: those ticked ("*": all). */
  function subscription(values) {
    const events = values["event:*"]
      ? ["*"]
      : Object.keys(values)
          .filter((name) => name.startsWith("event:") && values[name])
          .map((name) => name.slice("event:".length));
    const body = { url: values.url.trim(), events };
    if (values.user_id.trim() !== "") body.user_id = integerOrText(values.user_id.trim());
    if (values.alert_below.trim() !== "") body.alert_below = values.alert_below.trim();
    if (values.description !== "") body.description = values.description;
    return body;
  }

  function showSecret(webhook) {
    $("webhook-secret-url").textContent = webhook.url;
    $("webhook-secret").textContent = webhook.secret;
    $("webhook-secret-copied").textContent = "";
    $("webhook-secret-box").hidden = false;
    $("webhook-secret-copy").focus();
  }

  function forgetSecret() {
    $("webhook-secret-box").hidden = true;
    $("webhook-secret").textContent = "";
    $("webhook-secret-url").textContent = "";
  }

  /** To the clipboard where the browser allows it (https, localhost), else selected for Ctrl+C. */
  async function copySecret() {
    const code = $("webhook-secret");
    const said = $("webhook-secret-copied");
    try {
      await navigator.clipboard.writeText(code.textContent);
      said.textContent = "Copied to the clipboard.";
    } catch {
      window.getSelection().selectAllChildren(code);
      said.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy it.";
    }
  }

  // A subscription: its facts, and its Parked, Replay and Delete panels

  function added(status) {
    const item = subscriptionItem(status);
    const entry = { item, status };
    items.set(status.id, entry);
    const parts = (name) => item.querySelector(`[data-part=${name}]`);
    const parked = parts("parked");
    const replay = parts("replay");
    const remove = parts("delete");
    toggle(entry, "parked", parked, () => loadParked(entry));
    toggle(entry, "replay", replay, () => suggestPosition(entry));
    toggle(entry, "delete", remove, () => remove.elements.confirm.focus());
    replayForm(entry, replay);
    deleteForm(entry, remove);
    return entry;
  }

  /** A button that shows or hides one panel of the item; opened() runs when shown. */
  function toggle(entry, name, panel, opened) {
    const button = entry.item.querySelector(`button[data-opens=${name}]`);
    button.addEventListener("click", () => {
      const open = panel.hidden;
      panel.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (open) opened();
    });
  }

  function close(entry, name) {
    entry.item.querySelector(`[data-part=${name}]`).hidden = true;
    entry.item.querySelector(`button[data-opens=${name}]`).setAttribute("aria-expanded", "false");
  }

  function drawFacts(entry) {
    const { item, status } = entry;
    const facts = item.querySelector("dl.facts");
    facts.replaceChildren();
    const head = status.position + status.lag;
    fact(facts, "events", "Events", status.events.includes("*") ? "all" : status.events.join(", "));
    if (status.user_id !== null) fact(facts, "user_id", "Only user", String(status.user_id));
    if (status.alert_below !== null) fact(facts, "alert_below", "Alert below", status.alert_below);
    fact(facts, "position", "Position", `${fmt(status.position)} of ${fmt(head)}`);
    const lag = fact(
      facts,
      "lag",
      "Lag",
      status.lag === 0 ? "0 events: caught up" : `${fmt(status.lag)} ${status.lag === 1 ? "event" : "events"} behind`,
      status.lag === 0 ? "good-text" : "warn-text",
    );
    lag.dataset.lag = String(status.lag);
    fact(facts, "pending", "Pending", fmt(status.pending)).dataset.pending = String(status.pending);
    const parked = fact(
      facts,
      "parked",
      "Parked",
      status.parked === 0 ? "none" : `${fmt(status.parked)}: given up on, until replayed`,
      status.parked === 0 ? "good-text" : "bad-text",
    );
    parked.dataset.parked = String(status.parked);
    fact(facts, "last_delivered", "Last delivery", status.last_delivered_at ? since(status.last_delivered_at) : "none yet");
    const error = fact(facts, "last_error", "Last error", status.last_error ?? "none", status.last_error ? "warn-text" : "");
    if (status.last_error) error.append(element("span", { className: "when", textContent: since(status.last_error_at) }));
    if (status.replay) {
      const { after, until } = status.replay;
      fact(facts, "replay", "Replaying", `positions ${fmt(after + 1)} to ${fmt(until)}, sending them again`);
    }
    item.querySelector("button[data-opens=parked]").textContent = `Parked (${fmt(status.parked)})`;
    if (!item.querySelector("[data-part=parked]").hidden) loadParked(entry);
  }

  /** The subscription's parked deliveries, newest first, under it. */
  async function loadParked(entry) {
    entry.parkedRead = (entry.parkedRead || 0) + 1;
    const mine = entry.parkedRead;
    const panel = entry.item.querySelector("[data-part=parked]");
    const note = panel.querySelector("p");
    const found = await parkedOf(entry, SHOWN_PARKED, note);
    if (found === null || mine !== entry.parkedRead) return;
    const rows = found.map(parkedRow);
    panel.querySelector("tbody").replaceChildren(...rows);
    panel.querySelector("table").hidden = rows.length === 0;
    const total = entry.status.parked;
    if (rows.length === 0) note.textContent = "Nothing is parked.";
    else if (total > rows.length) note.textContent = `The ${fmt(rows.length)} newest of ${fmt(total)} parked:`;
    else note.textContent = "Given up on after the retry period; a replay from a position sends them again.";
    note.className = "hint";
  }

  /** The replay's position: the first parked delivery's, if any (and none was typed). */
  async function suggestPosition(entry) {
    const form = entry.item.querySelector("[data-part=replay]");
    const input = form.elements.from_position;
    const hint = form.querySelector(`#${input.id}-hint`);
    input.focus();
    if (entry.status.parked === 0) {
      hint.textContent = `Nothing is parked. Events from this position on are sent again; this subscription started after position ${fmt(entry.status.start_position)}.`;
      return;
    }
    const found = await parkedOf(entry, MOST_PARKED, hint);
    if (found === null || found.length === 0) return;
    const first = Math.min(...found.map((delivery) => delivery.position));
    if (input.value === "") input.value = String(first);
    const of = entry.status.parked > found.length ? ` (of the newest ${fmt(found.length)})` : "";
    hint.textContent = `The first parked delivery${of} is at position ${fmt(first)}: it and every later event it wants are sent again.`;
  }

  /** Up to limit parked deliveries, or null when the API did not give them (said in note). */
  async function parkedOf(entry, limit, note) {
    const path = `/admin/webhooks/${entry.status.id}/deliveries?status=parked&limit=${limit}`;
    let result;
    try {
      result = await api("GET", path);
    } catch (error) {
      if (!(error instanceof NoAnswer)) throw error;
      result = { ok: false, status: 0, data: { error: { message: `no answer (${error.message}).` } } };
    }
    if (!result.ok) {
      note.textContent = `Could not read the parked deliveries: ${errorOf(result).message}`;
      note.className = "bad-text";
      return null;
    }
    return result.data.deliveries;
  }

  function replayForm(entry, form) {
    handleForm(form, {
      check: (values) => {
        if (!/^[0-9]{1,19}$/.test(values.from_position.trim())) {
          return { field: "from_position", message: "A position of the log: a whole number from 1, like 42." };
        }
        return values.confirm ? null : { field: "confirm", message: "Tick the box to confirm." };
      },
      send: (values) => {
        const body = jsonText({ from_position: integerOrText(values.from_position.trim()) });
        return unkeyed(() => api("POST", `/admin/webhooks/${entry.status.id}/replay`, { body }));
      },
      done: async (data) => {
        const { after, until } = data.replay;
        close(entry, "replay");
        const range = until > after + 1 ? `positions ${fmt(after + 1)} to ${fmt(until)}` : `position ${fmt(until)}`;
        const what =
          until > after
            ? `the events it wants at ${range} are sent again, and later ones come as usual`
            : "nothing is queued up to there yet: those events come as usual";
        say(`Replay asked for ${entry.status.url}: ${what}.`, "ok");
        await load();
      },
      refused: gone(entry),
    });
  }

  function deleteForm(entry, form) {
    handleForm(form, {
      check: (values) => (values.confirm ? null : { field: "confirm", message: "Tick the box to confirm." }),
      send: () => unkeyed(() => api("DELETE", `/admin/webhooks/${entry.status.id}`)),
      done: async () => {
        say(`Deleted the subscription of ${entry.status.url}: nothing more is sent to it.`, "ok");
        await load();
      },
      refused: gone(entry),
    });
  }

  /** A refusal because the subscription is gone (deleted meanwhile): said above the list. */
  function gone(entry) {
    return async (error) => {
      if (error.code !== "webhook_not_found") return false;
      say(`The subscription of ${entry.status.url} is gone: it was deleted meanwhile.`, "error");
      await load();
      return true;
    };
  }

  return { load, clear };
}

/**
 * The admin's webhook requests take no Idempotency-Key: an answer that leaves
 * it unknown whether one happened says to look at the list before sending it
 * again (a second subscription would be a second receiver's worth of posts).
 */
async function unkeyed(request) {
  const unknown = (why) => ({
    ok: false,
    status: 0,
    data: {
      error: {
        code: "outcome_unknown",
        message: `${why} It is not known whether this happened: look at the subscriptions (they refresh every 2 s) before sending it again.`,
      },
    },
  });
  try {
    const result = await request();
    return result.status >= 500 ? unknown(errorOf(result).message) : result;
  } catch (error) {
    if (!(error instanceof NoAnswer)) throw error;
    return unknown(`No answer from the server (${error.message}).`);
  }
}

function element(tag, properties = {}, ...children) {
  const made = document.createElement(tag);
  const { dataset = {}, attributes = {}, ...rest } = properties;
  Object.assign(made, rest);
  Object.assign(made.dataset, dataset);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  made.append(...children);
  return made;
}

/** A subscription's list item: its URL and note, its facts, its buttons and their panels. */
function subscriptionItem(status) {
  const id = `webhook-${status.id}`;
  const url = element("p", { className: "webhook-url", id: `${id}-url` }, element("strong", { textContent: status.url }));
  const noted = status.description ? `“${status.description}” · ` : "";
  const ref = element("span", { className: "ref", title: status.id, textContent: `webhook ${status.id.slice(0, 8)}` });
  const about = element("p", { className: "hint webhook-about" }, noted, ref);
  const facts = element("dl", { className: "facts" });
  const buttons = element(
    "div",
    { className: "buttons" },
    opener("parked", "Parked", id),
    opener("replay", "Replay from position", id),
    opener("delete", "Delete", id, "quiet danger"),
  );
  return element(
    "li",
    { className: "webhook", id, dataset: { webhookId: status.id } },
    url,
    about,
    facts,
    buttons,
    parkedPanel(id),
    replayMarkup(id),
    deleteMarkup(id, status),
  );
}

function opener(name, text, id, className = "quiet") {
  return element("button", {
    type: "button",
    className,
    textContent: text,
    dataset: { opens: name },
    attributes: { "aria-expanded": "false", "aria-controls": `${id}-${name}`, "aria-describedby": `${id}-url` },
  });
}

function parkedPanel(id) {
  const head = element("tr");
  for (const [name, numeric] of PARKED_COLUMNS) {
    head.append(element("th", { scope: "col", textContent: name, className: numeric ? "num" : "" }));
  }
  const table = element(
    "table",
    { className: "responsive parked", hidden: true },
    element("thead", {}, head),
    element("tbody"),
  );
  return element(
    "div",
    { className: "webhook-panel", id: `${id}-parked`, hidden: true, dataset: { part: "parked" } },
    element("h4", { textContent: "Parked deliveries" }),
    element("p", { className: "hint", textContent: "Reading…", attributes: { role: "status" } }),
    element("div", { className: "table-wrap" }, table),
  );
}

const PARKED_COLUMNS = [
  ["Event", false],
  ["Position", true],
  ["Attempts", true],
  ["Last error", false],
];

function parkedRow(delivery) {
  const when = delivery.last_attempt_at ? new Date(delivery.last_attempt_at * 1000).toLocaleTimeString() : "";
  const cells = [
    ["Event", delivery.event_type],
    ["Position", fmt(delivery.position)],
    ["Attempts", fmt(delivery.attempts)],
    ["Last error", `${delivery.last_error ?? "none"}${when ? ` (at ${when})` : ""}`],
  ];
  const row = element("tr", { dataset: { position: String(delivery.position) } });
  for (const [name, text] of cells) {
    const numeric = name === "Position" || name === "Attempts";
    row.append(element("td", { textContent: text, className: numeric ? "num" : "", dataset: { label: name } }));
  }
  return row;
}

/** A field of a form: its label, its input, a hint under it. */
function field(input, label, hint) {
  const parts = [element("label", { htmlFor: input.id, textContent: label }), input];
  if (hint !== null) {
    parts.push(element("p", { className: "hint", id: `${input.id}-hint`, textContent: hint }));
    input.setAttribute("aria-describedby", `${input.id}-hint`);
  }
  return element("div", { className: "field" }, ...parts);
}

function confirmation(id, text) {
  const box = element("input", { id, name: "confirm", type: "checkbox" });
  return element("div", { className: "field check" }, box, element("label", { htmlFor: id, textContent: text }));
}

function replayMarkup(id) {
  const input = element("input", {
    id: `${id}-from`,
    name: "from_position",
    type: "number",
    min: "1",
    step: "1",
    inputMode: "numeric",
    autocomplete: "off",
  });
  return element(
    "form",
    { className: "webhook-panel", id: `${id}-replay`, hidden: true, dataset: { part: "replay" } },
    element("h4", { textContent: "Replay from a position of the log" }),
    field(input, "From position", ""),
    confirmation(`${id}-replay-confirm`, "Yes, send these events again (receivers skip repeats by event id)"),
    element("button", { type: "submit", textContent: "Replay" }),
  );
}

function deleteMarkup(id, status) {
  return element(
    "form",
    { className: "webhook-panel danger", id: `${id}-delete`, hidden: true, dataset: { part: "delete" } },
    element("h4", { textContent: "Delete the subscription" }),
    element("p", {
      className: "hint",
      textContent: `Nothing more is sent to ${status.url}; its queue (parked deliveries too) goes with it, and its secret is no longer used.`,
    }),
    confirmation(`${id}-delete-confirm`, "Yes, delete this subscription"),
    element("button", { type: "submit", className: "danger", textContent: "Delete" }),
  );
}
