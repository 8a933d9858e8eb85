// The wallet page's holds: the open holds, each with its time left and its own
// Capture and Void forms, and the form that places a hold. Every submission
// goes through handleForm (its own Idempotency-Key, kept for a resend), and the
// wallet is shown again after each answer, a refusal's too.

import { integerOrText, jsonText } from "./api.js";
import { handleForm, showMessage } from "./forms.js";

const $ = (id) => document.getElementById(id);
const TIME = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const MOMENT = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const DAY_MS = 24 * 3600 * 1000;

/** A moment for a person: its time when it is within a day of now, else its date too. */
export function moment(iso) {
  const date = new Date(iso);
  return (Math.abs(date - Date.now()) < DAY_MS ? TIME : MOMENT).format(date);
}

/** Whom a hold (or a hold's history entry) is for: a destination or another user. */
export function holdTarget(hold) {
  return hold.counterparty ? `user ${hold.counterparty.user_id}` : hold.destination;
}

/** A hold's id as the page shows it: its first eight characters (the whole id in a tooltip). */
export function shortId(id) {
  return id.slice(0, 8);
}

/** How a hold ended, for a person: what a hold_ended refusal tells of it. */
export function outcomeOf(hold) {
  const on = hold.ended_on ? ` at ${moment(hold.ended_on)}` : "";
  if (hold.status === "captured") {
    const rest = hold.released && hold.released !== "0.00" ? `, ${hold.released} released` : "";
    return `It was captured${on}: ${hold.captured} taken${rest}.`;
  }
  if (hold.status === "voided") return `It was voided${on}: ${hold.released} released.`;
  if (hold.status === "expired") {
    return `It expired${on || ` at ${moment(hold.expires_at)}`}: ${hold.released} released.`;
  }
  return `It is ${hold.status}.`;
}

/** "4 min 05 s", "1 h 02 min", "12 s": the time until a moment, or null once it has passed. */
function timeLeft(iso) {
  const seconds = Math.ceil((Date.parse(iso) - Date.now()) / 1000);
  if (seconds <= 0) return null;
  const pad = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${pad(seconds % 60)} s`;
  if (seconds < 2 * 86400) return `${Math.floor(seconds / 3600)} h ${pad(Math.floor(seconds / 60) % 60)} min`;
  return `${Math.floor(seconds / 86400)} days`;
}

/**
 * The holds panel. api(method, path, options) calls the API as the owner;
 * userPath(suffix) is the owner's path; shown(wallet) shows the wallet a command
 * left, and everything that follows from it (the history, the holds); again()
 * reads the wallet afresh and shows it.
 */
export function holdsPanel({ api, userPath, shown, again }) {
  const items = new Map(); // hold id -> its list item, kept while it is open (its forms' keys with it)
  const looked = new Set(); // holds past their expiry already asked about again

  placeForm();
  setInterval(tick, 1000);

  /** Reads the open holds and shows them. */
  async function load() {
    const result = await api("GET", userPath("/holds"));
    if (!result.ok) return; // The wallet's own read says what is wrong.
    show(result.data.holds);
  }

  function show(holds) {
    const ids = new Set(holds.map((hold) => hold.id));
    for (const [id, item] of items) {
      if (!ids.has(id)) {
        item.remove();
        items.delete(id);
      }
    }
    const wanted = holds.map((hold) => items.get(hold.id) || added(hold));
    const list = $("holds");
    // Moving an item would take the focus from its field: only when the order changed.
    if (wanted.some((item, n) => list.children[n] !== item)) list.replaceChildren(...wanted);
    $("holds-empty").hidden = holds.length > 0;
    tick();
  }

  function clear() {
    items.clear();
    $("holds").replaceChildren();
    $("holds-empty").hidden = false;
    say("", "ok");
  }

  function added(hold) {
    const item = holdItem(hold);
    items.set(hold.id, item);
    captureForm(item.querySelector("form.capture"), hold);
    voidForm(item.querySelector("form.void"), hold);
    return item;
  }

  /** What the panel says of a hold's last action (its form may be gone since). */
  function say(text, kind) {
    const note = $("holds-message");
    note.textContent = text;
    note.dataset.kind = kind;
    note.hidden = !text;
  }

  /** A refusal of a hold that has ended meanwhile: said above the list, with how it ended. */
  async function refused(error) {
    if (error.code !== "hold_ended" && error.code !== "hold_not_found") {
      await again(); // Shown beside the form's field; the wallet as it is now.
      return false;
    }
    say(error.hold ? `${error.message} ${outcomeOf(error.hold)}` : error.message, "error");
    await again();
    return true;
  }

  function captureForm(form, hold) {
    handleForm(form, {
      send: (values, key) => {
        const body = values.amount === "" ? undefined : jsonText({ amount: values.amount });
        return api("POST", userPath(`/holds/${hold.id}/capture`), { key, body });
      },
      done: async (data) => {
        const rest = data.released !== "0.00" ? `; ${data.released} released` : "";
        say(`Captured ${data.captured} of ${data.amount} for ${holdTarget(data)}${rest}. Balance: ${data.wallet.balance}.`, "ok");
        await shown(data.wallet);
      },
      fieldFor: { capture_exceeds_hold: "amount", daily_limit_exceeded: "amount", insufficient_funds: "amount" },
      refused,
    });
  }

  function voidForm(form, hold) {
    handleForm(form, {
      send: (values, key) => api("POST", userPath(`/holds/${hold.id}/void`), { key }),
      done: async (data) => {
        say(`Voided the hold of ${data.amount} for ${holdTarget(data)}: ${data.released} released. Available: ${data.wallet.available}.`, "ok");
        await shown(data.wallet);
      },
      refused,
    });
  }

  function placeForm() {
    const form = $("hold");
    const showChoice = () => {
      const chosen = form.elements.for.value;
      for (const field of form.querySelectorAll("[data-for]")) field.hidden = field.dataset.for !== chosen;
    };
    form.addEventListener("change", showChoice);
    form.addEventListener("reset", () => setTimeout(showChoice)); // after the reset itself
    handleForm(form, {
      check: (values) =>
        /^[0-9]{1,9}$/.test(values.expires_in)
          ? null
          : { field: "expires_in", message: "How long it holds: a whole number, like 10." },
      send: (values, key) => {
        const body = { amount: values.amount };
        if (values.for === "user") body.to_user_id = integerOrText(values.to_user_id);
        else body.destination = values.destination;
        if (values.description !== "") body.description = values.description;
        // The API takes seconds; minutes and hours are whole multiples of them.
        body.expires_in = integerOrText(String(Number(values.expires_in) * Number(values.unit)));
        return api("POST", userPath("/holds"), { key, body: jsonText(body) });
      },
      done: async (data) => {
        showMessage(form, `Held ${data.amount} for ${holdTarget(data)} until ${moment(data.expires_at)}. Available: ${data.wallet.available}.`, "ok");
        await shown(data.wallet);
      },
      fieldFor: {
        insufficient_funds: "amount",
        daily_limit_exceeded: "amount",
        invalid_expiry: "expires_in",
        wallet_closed: "amount",
      },
      refused: async () => {
        await again();
        return false;
      },
    });
  }

  /** Each open hold's time left, every second; one past its expiry is asked about once. */
  function tick() {
    let due = false;
    for (const [id, item] of items) {
      const left = timeLeft(item.dataset.expiresAt);
      const text = item.querySelector(".time-left");
      text.textContent = left ? `in ${left}` : "expired";
      item.classList.toggle("expired", !left);
      if (!left && !looked.has(id)) {
        looked.add(id);
        due = true;
      }
    }
    if (due) setTimeout(again, 1500); // Its expiry is recorded within moments.
  }

  return { load, show, clear };
}

/** A hold's list item: what it holds, for whom, until when; its Capture and Void forms. */
function holdItem(hold) {
  const item = document.createElement("li");
  item.id = `hold-${hold.id}`;
  item.dataset.holdId = hold.id;
  item.dataset.expiresAt = hold.expires_at;

  const summary = document.createElement("p");
  summary.className = "hold-what";
  summary.id = `hold-${hold.id}-what`;
  const amount = document.createElement("strong");
  amount.className = "hold-amount";
  amount.textContent = hold.amount;
  const note = hold.description ? ` (“${hold.description}”)` : "";
  summary.append(amount, ` for ${holdTarget(hold)}${note}`);

  const when = document.createElement("p");
  when.className = "hint hold-when";
  const left = document.createElement("span");
  left.className = "time-left";
  const ref = document.createElement("span");
  ref.className = "ref";
  ref.title = hold.id;
  ref.textContent = `hold ${shortId(hold.id)}`;
  when.append(`Expires ${moment(hold.expires_at)}, `, left, " · ", ref);

  // The Void button sits beside Capture, in the capture form's markup, but is the void form's own.
  const capture = captureMarkup(hold);
  const voiding = voidMarkup(hold);
  const buttons = document.createElement("div");
  buttons.className = "hold-buttons";
  buttons.append(button("Capture", hold, ""), button("Void", hold, "quiet", voiding.id));
  capture.append(buttons);
  item.append(summary, when, capture, voiding);
  return item;
}

function captureMarkup(hold) {
  const form = document.createElement("form");
  form.className = "capture";
  form.id = `capture-${hold.id}`;
  const field = document.createElement("div");
  field.className = "field";
  const label = document.createElement("label");
  const input = document.createElement("input");
  input.id = `capture-${hold.id}-amount`;
  label.htmlFor = input.id;
  label.textContent = "Amount to capture";
  Object.assign(input, { name: "amount", type: "text", inputMode: "decimal", autocomplete: "off", placeholder: hold.amount });
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.id = `${input.id}-hint`;
  hint.textContent = `Empty: all ${hold.amount}; less releases the rest.`;
  input.setAttribute("aria-describedby", hint.id);
  field.append(label, input, hint);
  form.append(field);
  return form;
}

function voidMarkup(hold) {
  const form = document.createElement("form");
  form.className = "void";
  form.id = `void-${hold.id}`;
  return form;
}

/** A submit button named by what it does, described by the hold it does it to. */
function button(name, hold, className, formId = null) {
  const element = document.createElement("button");
  element.type = "submit";
  element.textContent = name;
  if (className) element.className = className;
  if (formId) element.setAttribute("form", formId);
  element.setAttribute("aria-describedby", `hold-${hold.id}-what`);
  return element;
}
