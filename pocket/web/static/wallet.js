// The wallet page: sign up or sign in (the token kept in this tab's
// sessionStorage only), the balance, what is held and available, the open
// holds (holds.js), the history page by page, a chart of the balance drawn from
// the whole history, and the forms that move money.

import { NoAnswer, call, errorOf, integerOrText, jsonText } from "./api.js";
import { drawChart } from "./chart.js";
import { clearMessages, handleForm, showMessage } from "./forms.js";
import { holdTarget, holdsPanel, moment, shortId } from "./holds.js";

const SESSION = "pocket.session";
// Ten entries: about a screen and a half on a phone (each is a card there), the
// latest first, so that nobody pages to the end for what just happened.
const PAGE = 10;
const CHART_PAGE = 500;
const CHART_PAGES = 20; // At most 10,000 entries in the chart.

const $ = (id) => document.getElementById(id);
let session = null; // {userId, token}
const pages = [null]; // the ?after= cursor of each history page seen, first page first
let pageIndex = 0;
let charted = null; // {entries, complete}: what the chart shows, redrawn on resize

function readSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION));
    return saved && saved.userId && saved.token ? saved : null;
  } catch {
    return null;
  }
}

function api(method, path, options = {}) {
  return call(method, path, { ...options, token: session.token });
}

const userPath = (suffix = "") => `/users/${session.userId}${suffix}`;

// Signing up and in

handleForm($("sign-up"), {
  send: (values) => call("POST", "/users", { body: jsonText({ name: values.name }) }),
  done: (data) => {
    signIn({ userId: data.user.id, token: data.token }, data);
    $("token-user").textContent = data.user.id;
    $("token-value").textContent = data.token;
    $("token-box").hidden = false;
    $("token-done").focus();
  },
});

handleForm($("sign-in"), {
  send: (values) => {
    if (!/^[0-9]{1,19}$/.test(values.user_id)) {
      return Promise.resolve(invalid("user_id", "A user id is a whole number, like 3."));
    }
    return call("GET", `/users/${values.user_id}`, { token: values.token.trim() });
  },
  done: (data, values) => signIn({ userId: data.user.id, token: values.token.trim() }, data),
  fieldFor: { unauthorized: "token", user_not_found: "user_id", not_found: "user_id" },
});

/** An answer of our own for a field checked before asking the API. */
function invalid(field, message) {
  return { ok: false, status: 422, data: { error: { code: "validation_failed", message, fields: { [field]: message } } } };
}

function signIn(newSession, data) {
  session = newSession;
  sessionStorage.setItem(SESSION, JSON.stringify(session));
  pages.length = 1;
  pageIndex = 0;
  showWallet(data);
}

function signOut(message) {
  sessionStorage.removeItem(SESSION);
  session = null;
  $("signed-in").hidden = true;
  $("token-box").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("signed-out").hidden = false;
  for (const form of document.forms) {
    clearMessages(form);
    form.reset();
  }
  $("history").tBodies[0].replaceChildren();
  holds.clear();
  $("chart").replaceChildren();
  charted = null;
  notice(message);
  $("sign-up-name").focus();
}

$("sign-out").addEventListener("click", () => signOut("You have signed out. This tab no longer keeps your token."));
$("token-done").addEventListener("click", () => {
  $("token-box").hidden = true;
  $("token-value").textContent = "";
  $("add-amount").focus();
});

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// The wallet

async function showWallet(data) {
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("sign-out").hidden = false;
  notice("");
  if (data) {
    showAccount(data);
  } else {
    const result = await api("GET", userPath());
    if (!answered(result)) return;
    showAccount(result.data);
  }
  await Promise.all([showHistoryPage(), showChart(), holds.load()]);
}

/** False (and the person told) when an answer is not a success. */
function answered(result) {
  if (result.ok) return true;
  const error = errorOf(result);
  if (result.status === 401 || result.status === 404) {
    signOut(`Please sign in again: ${error.message}`);
  } else {
    notice(error.message);
  }
  return false;
}

function showAccount(data) {
  const { user, wallet } = data;
  if (user) {
    $("who").textContent = `${user.name} · user ${user.id}`;
    $("who").hidden = false;
  }
  $("balance").textContent = wallet.balance;
  $("held").textContent = wallet.held;
  $("available").textContent = wallet.available;
  // A limit shows only where one is set: a credit limit of 0.00, a daily limit of null, is none.
  const credit = wallet.credit_limit && wallet.credit_limit !== "0.00" ? wallet.credit_limit : null;
  $("credit-limit").textContent = credit || "";
  $("credit-limit-row").hidden = !credit;
  $("spending-hint").textContent = credit
    ? `Held: what open holds reserve. Available: what you may spend now, the balance less what is held, plus the credit limit (the balance may go down to −${credit}).`
    : "Held: what open holds reserve. Available: what you may spend now, the balance less what is held.";
  $("daily-limit").textContent = wallet.daily_limit ? `${wallet.daily_limit} a day (UTC)` : "";
  $("daily-limit-row").hidden = !wallet.daily_limit;
  $("wallet-state").textContent = wallet.closed
    ? "This wallet is closed: its history stays readable, but no money can move."
    : `Wallet ${wallet.aggregate_id}`;
  // A closed wallet takes no more money, and cannot be closed again.
  $("actions").hidden = wallet.closed;
  $("holds-section").hidden = wallet.closed;
  $("close-section").hidden = wallet.closed;
}

// The history, newest first, a page at a time (the API's own pages and cursors)

async function showHistoryPage() {
  const after = pages[pageIndex];
  const query = `?order=newest&limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`;
  const result = await api("GET", userPath(`/transactions${query}`));
  if (!answered(result)) return;
  const { transactions, next } = result.data;
  pages.length = pageIndex + 1;
  if (next) pages.push(next);
  const body = $("history").tBodies[0];
  body.replaceChildren(...transactions.map(historyRow));
  $("history-empty").hidden = transactions.length > 0 || pageIndex > 0;
  $("history").hidden = transactions.length === 0 && pageIndex === 0;
  $("history-previous").disabled = pageIndex === 0;
  $("history-next").disabled = !next;
  $("history-page").textContent = `Page ${pageIndex + 1}`;
}

// How an entry's amount reads: money in, out, or only reserved and let go (the balance unmoved).
const SIGNS = { IN: "+", OUT: "−", HOLD: "", RELEASE: "" };

function historyRow(t) {
  const row = document.createElement("tr");
  row.dataset.id = t.id;
  row.className = t.type.toLowerCase();
  if (t.hold_id) row.dataset.holdId = t.hold_id;
  const cells = [
    ["#", String(t.id)],
    ["When", when(t.date)],
    ["What", what(t)],
    ["Amount", `${SIGNS[t.type] ?? ""}${t.amount}`],
    ["Balance after", t.balance],
  ];
  for (const [name, text] of cells) {
    const cell = document.createElement("td");
    cell.dataset.label = name;
    if (name === "What") {
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = t.type;
      cell.append(kind, ` ${text}`);
      if (t.hold_id) cell.append(holdLine(t));
      if (t.actor) {
        const by = document.createElement("span");
        by.className = "by";
        by.textContent = `by ${t.actor}`;
        cell.append(by);
      }
    } else {
      cell.textContent = text;
    }
    if (name === "Amount" || name === "Balance after") cell.className = "num";
    row.append(cell);
  }
  return row;
}

function what(t) {
  const note = t.description ? ` (“${t.description}”)` : "";
  if (t.type === "HOLD") return `held for ${holdTarget(t)}${note}`;
  if (t.type === "RELEASE") return `hold ${t.outcome === "expired" ? "expired" : "voided"}: back to available`;
  if (t.counterparty) {
    return t.type === "IN" ? `from user ${t.counterparty.user_id}${note}` : `to user ${t.counterparty.user_id}${note}`;
  }
  return t.type === "IN" ? `from ${t.source}` : `to ${t.destination}${note}`;
}

/** The hold an entry is about (its short id, the whole in a tooltip), and what it says of it. */
function holdLine(t) {
  const line = document.createElement("span");
  line.className = "by";
  const ref = document.createElement("span");
  ref.className = "ref";
  ref.title = t.hold_id;
  ref.textContent = `hold ${shortId(t.hold_id)}`;
  line.append(ref);
  if (t.type === "HOLD" && t.expires_at) line.append(`, until ${moment(t.expires_at)}`);
  if (t.outcome === "captured") {
    const rest = t.released && t.released !== "0.00" ? `, ${t.released} released` : ", all of it";
    line.append(` captured${rest}`);
  }
  return line;
}

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function when(iso) {
  return WHEN.format(new Date(iso));
}

$("history-previous").addEventListener("click", async () => {
  if (pageIndex > 0) {
    pageIndex -= 1;
    await showHistoryPage();
  }
});

$("history-next").addEventListener("click", async () => {
  if (pageIndex + 1 < pages.length) {
    pageIndex += 1;
    await showHistoryPage();
  }
});

// The chart: every page of the history, oldest first, walked with the API's cursors

async function showChart() {
  const entries = [];
  let after = null;
  let complete = false;
  for (let i = 0; i < CHART_PAGES; i += 1) {
    const query = `?limit=${CHART_PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    const result = await api("GET", userPath(`/transactions${query}`));
    if (!answered(result)) return;
    entries.push(...result.data.transactions);
    after = result.data.next;
    if (!after) {
      complete = true;
      break;
    }
  }
  charted = { entries, complete };
  drawCharted();
}

const DAY_MS = 24 * 3600 * 1000;
const MOMENT = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

function drawCharted() {
  if (!charted || $("signed-in").hidden) return;
  const { entries, complete } = charted;
  const svg = $("chart");
  svg.toggleAttribute("hidden", entries.length === 0); // an SVG element has no .hidden
  if (entries.length === 0) {
    $("chart-caption").textContent = "No money has moved yet: the balance has been 0.00 since the wallet opened.";
    return;
  }
  const width = Math.round(svg.parentElement.getBoundingClientRect().width) || 640;
  drawChart(svg, {
    entries,
    width,
    // Moments to the second when the history spans less than a day; else days.
    dateLabel: (time, span) => (span < DAY_MS ? MOMENT : DATE).format(new Date(time)),
  });
  const last = entries[entries.length - 1].balance;
  const changes = `${entries.length} ${entries.length === 1 ? "change" : "changes"}`;
  $("chart-caption").textContent = complete
    ? `From 0.00 to ${last}, over ${changes}.`
    : `The first ${changes} of a longer history, from 0.00 to ${last}.`;
}

let resizing = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(drawCharted);
});

/** After money moved: the account, the open holds, and the history's first page, where it shows. */
async function refresh(data) {
  showAccount(data);
  pages.length = 1;
  pageIndex = 0;
  await Promise.all([showHistoryPage(), showChart(), holds.load()]);
}

/** After a hold's command: the wallet it left (its answer names no user), and all that follows. */
const holds = holdsPanel({
  api: (...args) => api(...args),
  userPath: (suffix) => userPath(suffix),
  shown: (wallet) => refresh({ wallet }),
  again: async () => {
    if (!session) return; // signed out meanwhile
    const result = await api("GET", userPath());
    if (answered(result)) await refresh(result.data);
  },
});

// Moving money: each submission under its own Idempotency-Key

/** An amount the API accepted, as it writes money: two places (text only, no arithmetic). */
function asMoney(text) {
  const [whole, part = ""] = text.split(".");
  return `${whole.replace(/^0+(?=[0-9])/, "")}.${part.padEnd(2, "0")}`;
}

handleForm($("add"), {
  send: (values, key) =>
    api("POST", userPath("/add_money"), { key, body: jsonText({ amount: values.amount, source: values.source }) }),
  done: async (data, values) => {
    showMessage($("add"), `Added ${asMoney(values.amount)}. Balance: ${data.wallet.balance}.`, "ok");
    await refresh(data);
  },
});

handleForm($("draw"), {
  send: (values, key) =>
    api("POST", userPath("/draw_money"), {
      key,
      body: jsonText({ amount: values.amount, destination: values.destination }),
    }),
  done: async (data, values) => {
    showMessage($("draw"), `Drew ${asMoney(values.amount)}. Balance: ${data.wallet.balance}.`, "ok");
    await refresh(data);
  },
  fieldFor: { insufficient_funds: "amount" },
});

handleForm($("send"), {
  send: (values, key) => {
    const body = { to_user_id: integerOrText(values.to_user_id), amount: values.amount };
    if (values.description !== "") body.description = values.description;
    return api("POST", userPath("/transfers"), { key, body: jsonText(body) });
  },
  done: async (data) => {
    const { transfer } = data;
    showMessage($("send"), `Sent ${transfer.amount} to user ${transfer.to_user_id}. Balance: ${data.wallet.balance}.`, "ok");
    await refresh({ user: data.user, wallet: data.wallet });
  },
  fieldFor: { insufficient_funds: "amount" },
});

handleForm($("close"), {
  check: (values) => (values.confirm ? null : { field: "confirm", message: "Tick the box to confirm." }),
  send: (values, key) => api("POST", userPath("/close"), { key }),
  done: refresh,
  fieldFor: { wallet_not_empty: "confirm" },
});

// A read that got no answer (paging, loading) says so; the page stays as it was.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof NoAnswer) {
    event.preventDefault();
    notice(`The server could not be reached (${event.reason.message}): try again, or reload the page.`);
  }
});

// On load: the tab's session, if it has one

session = readSession();
if (session) {
  showWallet(null);
} else {
  $("signed-out").hidden = false;
}
