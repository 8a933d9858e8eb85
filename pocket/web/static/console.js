// The operator console: GET /admin/status (what `pocket status --json` reports:
// the projection and the hold-expiry follower; the 503 gate, the last `pocket
// verify`), GET /users and the webhooks (webhooks.js), every 2 seconds, with the
// admin token this tab keeps in its sessionStorage.

import { call, errorOf, NoAnswer } from "./api.js";
import { handleForm } from "./forms.js";
import { webhooksPanel } from "./webhooks.js";

const TOKEN = "pocket.admin";
const EVERY_MS = 2000;
const PAGE = 20;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN);
let timer = null;
let run = 0; // bumped at each sign-in and sign-out: a loop of an older run stops
let latest = 0; // the last refresh started: older ones do not draw over it
const pages = [null]; // the ?after= cursor of each page of users seen
let pageIndex = 0;

const SECTIONS = ["projections", "expiry", "users", "verify", "webhook-list"]; // greyed while they are not current
const NUMBER = new Intl.NumberFormat("en-US");
const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const fmt = (n) => NUMBER.format(n);

const webhooks = webhooksPanel({
  fact,
  api: (method, path, options = {}) => call(method, path, { ...options, token }),
  since: (unixSeconds) => {
    const iso = new Date(unixSeconds * 1000).toISOString();
    return `${TIME.format(new Date(iso))} (${ago(iso)})`;
  },
});

// Signing in and out

handleForm($("sign-in"), {
  send: async (values) => {
    const result = await call("GET", "/admin/status", { token: values.token.trim() });
    if (result.status === 404) {
      const { message } = errorOf(result);
      const text = `This is not the admin token: the API answers others “${message}”`;
      return { ok: false, status: 404, data: { error: { code: "not_found", message: text } } };
    }
    return result;
  },
  done: (data, values) => {
    token = values.token.trim();
    sessionStorage.setItem(TOKEN, token);
    start(data);
  },
  fieldFor: { unauthorized: "token", not_found: "token" },
});

$("sign-out").addEventListener("click", () => signOut("You have signed out. This tab no longer keeps the admin token."));

function start(status) {
  run += 1;
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("sign-out").hidden = false;
  notice("");
  pages.length = 1;
  pageIndex = 0;
  if (status) showStatus(status, new Date());
  loop(run);
}

function signOut(message) {
  run += 1;
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN);
  token = null;
  $("signed-in").hidden = true;
  $("sign-out").hidden = true;
  $("database").textContent = "";
  webhooks.clear();
  $("signed-out").hidden = false;
  notice(message);
  $("admin-token").focus();
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// Refreshing

async function loop(ofRun) {
  await refresh();
  if (ofRun === run) timer = setTimeout(() => loop(ofRun), EVERY_MS);
}

async function refresh() {
  latest += 1;
  const mine = latest;
  const after = pages[pageIndex];
  const usersPath = `/users?limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`;
  let status;
  let users;
  try {
    [status, users] = await Promise.all([
      call("GET", "/admin/status", { token }),
      call("GET", usersPath, { token }),
    ]);
  } catch (error) {
    if (!(error instanceof NoAnswer)) throw error;
    if (mine === latest) failed(`no answer (${error.message})`);
    return;
  }
  if (mine !== latest || token === null) return;
  for (const result of [status, users]) {
    if (result.status === 401 || result.status === 404) {
      signOut(`Please sign in again: ${errorOf(result).message}`);
      return;
    }
  }
  if (status.status === 503) {
    showGate(false);
    failed("the database is unreachable, so the API answers 503 (the figures below are from before)");
    return;
  }
  if (!status.ok || !users.ok) {
    failed(errorOf(status.ok ? users : status).message);
    return;
  }
  const now = new Date();
  showStatus(status.data, now);
  showUsers(users.data);
  await webhooks.load();
}

function failed(why) {
  $("refreshed").textContent = `Could not refresh at ${TIME.format(new Date())}: ${why}. Trying again every 2 s.`;
  $("refreshed").className = "bad-text";
  for (const id of SECTIONS) $(id).classList.add("stale");
}

// The status

function showStatus(status, at) {
  $("database").textContent = status.database;
  showGate(status.gate.open);
  showWrites(status.writes);
  $("projection-list").replaceChildren(...status.projections.map(projectionFacts));
  showFollowers(status.followers);
  showVerify(status.verify);
  showReads(status.reads);
  $("refreshed").textContent = `Updated ${TIME.format(at)}; refreshes every 2 s.`;
  $("refreshed").className = "hint";
  for (const id of SECTIONS) $(id).classList.remove("stale");
}

// Where the list of users is read (POCKET_READ_URL): a standby may lag a little.
function showReads(reads) {
  const line = $("reads");
  line.hidden = reads === null;
  if (reads === null) return;
  if (reads.served_by === "primary") {
    line.textContent = `Read from the primary: ${reads.problem ?? "the read server has not answered yet"}.`;
  } else {
    const kind = reads.standby ? "standby" : "read server";
    line.textContent = `Read from the ${kind} ${reads.server}, ${reads.lag_seconds.toFixed(1)} s behind the primary (at most ${reads.max_lag_seconds} s).`;
  }
}

// Whether the database confirms writes (a synchronous standby gone stops them).
function showWrites(writes) {
  const badge = $("writes");
  badge.textContent = writes.confirmed ? "confirmed" : "stuck: answering 503";
  badge.className = `badge ${writes.confirmed ? "good" : "bad"}`;
  badge.dataset.confirmed = String(writes.confirmed);
  const why = $("writes-why");
  why.hidden = writes.confirmed;
  if (!writes.confirmed) {
    const since = writes.stuck_since ? ` since ${TIME.format(new Date(writes.stuck_since))}` : "";
    why.textContent = `Writes are not being confirmed${since}: ${writes.why}. Reads are still served.`;
  }
}

function showGate(open) {
  const gate = $("gate");
  gate.textContent = open ? "open: serving" : "closed: answering 503";
  gate.className = `badge ${open ? "good" : "bad"}`;
  gate.dataset.open = String(open);
}

function projectionFacts(p) {
  const box = document.createElement("div");
  box.dataset.projection = p.name;
  const title = document.createElement("h3");
  title.textContent = p.name;
  const facts = document.createElement("dl");
  facts.className = "facts";
  const latestNote = p.latest_version === p.live_version ? "the latest" : `this code's latest: v${p.latest_version}`;
  fact(facts, "live_version", "Live version", `v${p.live_version} (${latestNote})`);
  followingFacts(facts, p);
  const migration = p.migration;
  fact(facts, "migration", "Migration", migration.running ? `running: ${holder(migration)}` : "none running");
  const others = p.versions.filter((v) => !v.live);
  if (others.length) {
    fact(facts, "versions", "Also built", others.map((v) => `v${v.version} at ${fmt(v.position)}`).join(", "));
  }
  box.append(title, facts);
  return box;
}

/** Where a follower is in Pocket's log, how far behind, and who follows it (active, standbys). */
function followingFacts(facts, p) {
  fact(facts, "position", "Position", `${fmt(p.position)} of ${fmt(p.head)}`);
  const lag = fact(
    facts,
    "lag",
    "Lag",
    `${fmt(p.lag_events)} ${p.lag_events === 1 ? "event" : "events"}, ${p.lag_seconds.toFixed(1)} s${p.lag_events === 0 ? ": caught up" : " behind"}`,
    p.lag_events === 0 ? "good-text" : "warn-text",
  );
  lag.dataset.lagEvents = String(p.lag_events);
  lag.dataset.lagSeconds = String(p.lag_seconds);
  const follower = p.follower;
  const running = fact(
    facts,
    "follower",
    "Active follower",
    follower.running ? `running: ${holder(follower)}` : "not running",
    follower.running ? "good-text" : "bad-text",
  );
  running.dataset.running = String(follower.running);
  const standbys = Array.isArray(follower.standbys) ? follower.standbys : [];
  let standbyText = "not reported by this server";
  if (Array.isArray(follower.standbys)) {
    standbyText = standbys.length ? standbys.map(holder).join("; ") : "none";
  }
  fact(facts, "standbys", "Standbys", standbyText);
}

// The followers beside the projection's (the hold-expiry one): where they are,
// and what they keep. A server that does not report them says so.
function showFollowers(followers) {
  const known = Array.isArray(followers);
  $("followers-unknown").hidden = known;
  $("follower-list").replaceChildren(...(known ? followers.map(followerFacts) : []));
}

function followerFacts(f) {
  const box = document.createElement("div");
  box.dataset.follower = f.name;
  const title = document.createElement("h3");
  title.textContent = f.name;
  const facts = document.createElement("dl");
  facts.className = "facts";
  followingFacts(facts, f);
  if ("open_holds" in f) holdFacts(facts, f);
  box.append(title, facts);
  return box;
}

/** The holds the expiry follower keeps: open, past their expiry (not yet recorded), the next to expire. */
function holdFacts(facts, f) {
  fact(facts, "open_holds", "Open holds", fmt(f.open_holds));
  let dueClass = "good-text";
  if (f.due_holds > 0) dueClass = f.follower.running ? "warn-text" : "bad-text";
  const due = fact(
    facts,
    "due_holds",
    "Past their expiry",
    f.due_holds === 0 ? "none" : `${fmt(f.due_holds)}, not yet recorded as expired`,
    dueClass,
  );
  due.dataset.due = String(f.due_holds);
  const next = f.next_expiry;
  fact(facts, "next_expiry", "Next expiry", next ? `${TIME.format(new Date(next))} (${fromNow(next)})` : "none");
}

/** Who holds a lock, as pocket status says it: pid and host (and since when). */
function holder(info) {
  if (typeof info !== "object" || info === null) return String(info);
  const parts = [];
  if (info.pid !== undefined && info.pid !== null) parts.push(`pid ${info.pid}`);
  if (info.host) parts.push(`on ${info.host}`);
  if (info.since) parts.push(`since ${TIME.format(new Date(info.since))}`);
  return parts.length ? parts.join(" ") : "a process";
}

function fact(list, key, name, text, className) {
  const term = document.createElement("dt");
  term.textContent = name;
  const value = document.createElement("dd");
  value.dataset.fact = key;
  value.textContent = text;
  if (className) value.className = className;
  list.append(term, value);
  return value;
}

function showVerify(run) {
  const list = $("verify");
  list.replaceChildren();
  $("verify-never").hidden = run !== null;
  if (run === null) return;
  fact(list, "at", "When", `${TIME.format(new Date(run.at))} (${ago(run.at)})`);
  fact(list, "checked", "Wallets checked", fmt(run.checked));
  fact(
    list,
    "mismatches",
    "Mismatches",
    fmt(run.mismatches),
    run.mismatches === 0 ? "good-text" : "bad-text",
  );
  fact(list, "at_position", "At position", `${fmt(run.position)}, wallet_records v${run.version}`);
}

/** "in 3 min", "12 s ago": a moment from now. */
function fromNow(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  return seconds >= 0 ? `in ${span(seconds)}` : `${span(-seconds)} ago`;
}

function span(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

function ago(iso) {
  return `${span(Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000)))} ago`;
}

// The users, a page at a time

const NUMBERS = new Set(["Balance", "Held", "Available", "Version"]);

function showUsers(page) {
  pages.length = pageIndex + 1;
  if (page.next) pages.push(page.next);
  $("users").tBodies[0].replaceChildren(...page.users.map(userRow));
  // Whether a wallet is closed, and what it holds, show only where the API says
  // (the list may not: it is the projection's, whose older versions keep neither).
  const says = (key) => page.users.some(({ wallet }) => wallet && key in wallet);
  $("users").classList.toggle("no-closed", !says("closed"));
  $("users").classList.toggle("no-holds", !says("held"));
  $("users-empty").hidden = page.users.length > 0 || pageIndex > 0;
  $("users-previous").disabled = pageIndex === 0;
  $("users-next").disabled = !page.next;
  $("users-page").textContent = `Page ${pageIndex + 1}`;
}

function userRow({ user, wallet }) {
  const row = document.createElement("tr");
  row.dataset.userId = user.id;
  const state = wallet && "closed" in wallet ? (wallet.closed ? "closed" : "open") : "";
  const cells = [
    ["User", String(user.id)],
    ["Name", user.name],
    ["Balance", wallet ? wallet.balance : "not yet projected"],
    ["Held", wallet && "held" in wallet ? wallet.held : "—"],
    ["Available", wallet && "available" in wallet ? wallet.available : "—"],
    ["Version", wallet ? String(wallet.version) : "—"],
    ["Wallet", state],
  ];
  for (const [name, text] of cells) {
    const cell = document.createElement("td");
    cell.dataset.label = name;
    cell.textContent = text;
    if (NUMBERS.has(name)) cell.className = "num";
    if (name === "Wallet" && state === "closed") cell.className = "warn-text";
    row.append(cell);
  }
  return row;
}

$("users-previous").addEventListener("click", () => {
  if (pageIndex > 0) {
    pageIndex -= 1;
    refresh();
  }
});

$("users-next").addEventListener("click", () => {
  if (pageIndex + 1 < pages.length) {
    pageIndex += 1;
    refresh();
  }
});

// On load: the tab's token, if it has one

if (token) {
  start(null);
} else {
  $("signed-out").hidden = false;
}
