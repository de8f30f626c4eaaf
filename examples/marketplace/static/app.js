// The marketplace page: a customer's broadcasts with their live state and timeline, or a
// transporter's open offers, appearing and vanishing live. Plain JS, no build step.
//
// Events say what changed; the read endpoint says what the user may do about it (`actions`, from the
// library's transition table), so after each change the page reads the broadcast again and shows
// only those buttons: the page restates no rule of the table.
"use strict";

const CLOSED = new Set(["fully_filled", "in_progress", "completed", "cancelled", "expired"]);
const LABELS = { accept: "Accept 1 truck", release: "Release my truck", cancel: "Cancel",
                 "start-trip": "Start trip", complete: "Complete" };
const DONE = { accept: "Accepted", release: "Released", cancel: "Cancelled", "start-trip": "Trip started",
               complete: "Completed" };
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("token");
const $ = (selector) => document.querySelector(selector);
const known = new Map(); // "booking-1" -> highest version seen (kept after removal: a late read cannot revive it)
const seenEvents = new Set(); // eventIds, to drop at-least-once duplicates
const pending = new Set(); // keys with a read scheduled
let role = null;

function key(kind, id) { return `${kind}-${id}`; }
function cardOf(kind, id) { return document.getElementById(`${role === "customer" ? "broadcast" : "offer"}-${key(kind, id)}`); }
function pad(n) { return String(n).padStart(2, "0"); }
function clock(iso) { const d = new Date(iso); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function showError(text) {
  const el = $("#error");
  el.textContent = text;
  el.hidden = !text;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json",
               ...(method === "POST" ? { "Idempotency-Key": crypto.randomUUID() } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const why = data.reason && !String(data.message).includes(data.reason) ? ` (${data.reason})` : "";
    throw new Error(`${data.message || response.statusText || `HTTP ${response.status}`}${why}`);
  }
  return data;
}

// -- one card, either view -------------------------------------------------------------------

function newCard(tag, id, className) {
  const card = document.createElement(tag);
  card.id = id;
  card.className = `${className} card`;
  card.innerHTML = `<div class="head"><span class="title"></span> <span class="status"></span>
      <span class="deadline"></span></div><div class="details"></div>
      <div class="fill"><span class="slots"></span> <span class="left"></span></div>
      <div class="actions"></div><p class="result" hidden></p>`;
  return card;
}

function trucksText(b) {
  if (b.vehicleType) return plural(b.slotsRequested, b.vehicleType);
  return (b.trucks || []).map((t) => plural(t.count, t.vehicleType)).join(", ");
}

// Status, fill and deadline, from an event or a read; details and buttons only from a read.
function fill(card, b) {
  Object.assign(card.dataset, { kind: b.kind, id: String(b.id), status: b.status, version: String(b.version),
                                expiresAt: b.expiresAt || "" });
  card.querySelector(".title").textContent = `${b.kind} #${b.id}`;
  card.querySelector(".status").textContent = b.status.replace("_", " ");
  card.querySelector(".slots").textContent = `${b.slotsFilled}/${b.slotsRequested} filled`;
  const left = b.slotsRequested - b.slotsFilled;
  const held = b.heldSlots ?? Number(card.dataset.held || 0);
  card.querySelector(".left").textContent = [CLOSED.has(b.status) ? "" : `${plural(left, "truck")} still wanted`,
    held ? `you hold ${held}` : ""].filter(Boolean).join(" · ");
  const deadline = card.querySelector(".deadline");
  deadline.dataset.expiresAt = CLOSED.has(b.status) ? "" : b.expiresAt || "";
  tick(deadline);
  if (!b.actions) {
    for (const button of card.querySelectorAll(".actions button")) button.disabled = true; // until the read
    return;
  }
  card.dataset.held = String(b.heldSlots || 0);
  if (b.pickup) {
    card.querySelector(".details").textContent = `${b.pickup.address} → ${b.drop.address} · ${trucksText(b)}`;
  }
  const actions = card.querySelector(".actions");
  actions.replaceChildren(...b.actions.map((action) => {
    const button = document.createElement("button");
    Object.assign(button, { type: "button", className: action, textContent: LABELS[action] || action });
    button.dataset.action = action;
    button.addEventListener("click", () => act(card, action));
    return button;
  }));
}

function tick(el) {
  const at = el.dataset.expiresAt;
  const left = at ? Math.ceil((new Date(at) - Date.now()) / 1000) : 0;
  const card = el.closest(".card");
  if (at && left <= 0 && !el.classList.contains("passed")) refresh(card.dataset.kind, card.dataset.id); // no actions now
  el.classList.toggle("passed", Boolean(at) && left <= 0);
  el.title = at ? `deadline ${new Date(at).toLocaleString()}` : "";
  el.textContent = !at ? "" : left > 0 ? `closes in ${Math.floor(left / 60)}:${pad(left % 60)}` : "deadline passed";
}

async function act(card, action) {
  const result = card.querySelector(".result");
  for (const button of card.querySelectorAll(".actions button")) button.disabled = true;
  try {
    const b = await api("POST", `/api/${card.dataset.kind}s/${card.dataset.id}/${action}`, {});
    result.className = "result";
    result.textContent = `${DONE[action] || action}: ${b.slotsFilled}/${b.slotsRequested} filled.`;
    result.hidden = role === "customer"; // the card's status says it
  } catch (e) {
    result.className = "result error";
    result.textContent = `Could not ${(LABELS[action] || action).toLowerCase()}: ${e.message}`;
    result.hidden = false;
  }
  refresh(card.dataset.kind, card.dataset.id);
}

// Read the broadcast again (once for a burst of events): its details and the user's actions.
function refresh(kind, id) {
  const k = key(kind, id);
  if (pending.has(k)) return;
  pending.add(k);
  setTimeout(async () => {
    pending.delete(k);
    try { show(await api("GET", `/api/${kind}s/${id}`)); } catch (e) { showError(e.message); }
  }, 0);
}

// A read: drawn unless a newer event was seen (its history is kept either way). An offer nobody can
// act on any more goes away.
function show(b) {
  const k = key(b.kind, b.id);
  let card = cardOf(b.kind, b.id);
  if ((known.get(k) || 0) <= b.version) {
    known.set(k, b.version);
    if (role === "transporter" && CLOSED.has(b.status) && !b.actions.length) { removeOffer(b.kind, b.id); return null; }
    card = card || addCard(b);
    fill(card, b);
  }
  for (const h of (card && role === "customer" && b.history) || []) {
    addTimeline(card, { event: "history", status: h.to, version: h.version, at: h.at, trigger: h.trigger,
                        actor: h.actor, reason: h.reason });
  }
  return card;
}

function addCard(b) {
  if (role === "customer") {
    const card = newCard("article", `broadcast-${key(b.kind, b.id)}`, "broadcast");
    card.insertAdjacentHTML("beforeend", `<ol class="timeline"></ol>`);
    $("#broadcasts").prepend(card);
    $("#broadcasts-empty").hidden = true;
    return card;
  }
  const card = newCard("li", `offer-${key(b.kind, b.id)}`, "offer");
  $("#offers").appendChild(card);
  $("#offers-empty").hidden = true;
  return card;
}

function removeOffer(kind, id) {
  document.getElementById(`offer-${key(kind, id)}`)?.remove();
  $("#offers-empty").hidden = $("#offers").children.length > 0;
}

// One row per version: a state change and the event naming it (BOOKING_CANCELLED) are one row.
function addTimeline(card, entry) {
  const list = card.querySelector(".timeline");
  let li = list.querySelector(`li[data-version="${entry.version}"]`);
  if (!li) {
    li = document.createElement("li");
    li.innerHTML = `<time></time> <span class="what"></span> <span class="named"></span>`;
    Object.assign(li.dataset, { event: "", status: entry.status, version: String(entry.version) });
    const later = [...list.children].find((row) => Number(row.dataset.version) > entry.version);
    list.insertBefore(li, later || null);
  }
  if (entry.event === "history" || !li.dataset.event) { // a read knows the actor: its text wins
    const by = entry.actor ? ` by ${entry.actor}` : "";
    li.querySelector("time").textContent = clock(entry.at);
    li.querySelector("time").dateTime = entry.at;
    li.querySelector(".what").textContent = `v${entry.version} ${entry.status.replace("_", " ")} · ${entry.trigger}${by}`
      + (entry.reason ? `: “${entry.reason}”` : "");
  }
  // data-event: the events heard live for this version, or "history" for a row only read
  const events = new Set(li.dataset.event.split(" ").filter(Boolean));
  if (entry.event !== "history") events.delete("history");
  if (entry.event !== "history" || !events.size) events.add(entry.event);
  li.dataset.event = [...events].join(" ");
  li.querySelector(".named").textContent = [...events]
    .filter((e) => e !== "history" && e !== "BROADCAST_STATE_CHANGED").join(", ");
}

// -- live events ------------------------------------------------------------------------------

function onEvent(name, p) {
  const b = { kind: p.kind, id: p.entityId, status: p.status, version: p.version, slotsFilled: p.slotsFilled,
              slotsRequested: p.slotsRequested, expiresAt: p.expiresAt };
  const k = key(p.kind, p.entityId);
  const newer = (known.get(k) || 0) < p.version;
  let card = cardOf(p.kind, p.entityId);
  if (newer) {
    known.set(k, p.version);
    if (card || role === "customer" || name.endsWith("_OFFERED")) {
      card = card || addCard(b);
      fill(card, b);
      refresh(p.kind, p.entityId);
    }
  }
  if (card && role === "customer") {
    addTimeline(card, { event: name, status: p.status, version: p.version, at: p.stateChangedAt,
                        trigger: p.trigger, reason: p.reason });
  }
}

async function createBooking(event) {
  event.preventDefault();
  try {
    await api("POST", "/api/bookings", {
      pickup: { address: "Dock 4, Westhafen", lat: 52.5362, lon: 13.3325 },
      drop: { address: "Warehouse 9, Tempelhof", lat: 52.4702, lon: 13.4036 },
      vehicleType: $("#vehicle-type").value, trucks: Number($("#trucks").value),
    });
    showError("");
  } catch (e) { showError(`Could not broadcast the booking: ${e.message}`); }
}

// -- start -----------------------------------------------------------------------------------

async function main() {
  if (!token) { $("#connection").dataset.state = "refused"; $("#connection").textContent = "no token"; return; }
  sessionStorage.setItem("token", token);
  let me;
  try { me = await api("GET", "/api/me"); } catch (e) { showError(e.message); return; }
  role = me.role;
  document.body.dataset.role = me.role;
  document.body.dataset.user = me.id;
  $("#who").textContent = `Signed in as ${me.role} ${me.id}.`;
  const socket = io({ auth: { token }, transports: ["websocket"] });
  const connection = $("#connection");
  socket.on("connect", () => { connection.dataset.state = "connected"; connection.textContent = "live"; });
  socket.on("disconnect", () => { connection.dataset.state = "disconnected"; connection.textContent = "offline"; });
  socket.on("connect_error", (e) => { connection.dataset.state = "refused"; connection.textContent = e.message; });
  socket.onAny((name, payload) => {
    if (seenEvents.has(payload.eventId)) return;
    seenEvents.add(payload.eventId);
    onEvent(name, payload);
  });
  setInterval(() => document.querySelectorAll(".deadline").forEach(tick), 1000);
  try {
    if (me.role === "customer") {
      $("#customer-view").hidden = false;
      $("#create-booking").addEventListener("submit", createBooking);
      for (const b of (await api("GET", "/api/broadcasts")).reverse()) {
        if (show(b)) show(await api("GET", `/api/${b.kind}s/${b.id}`)); // the history
      }
    } else {
      $("#transporter-view").hidden = false;
      for (const b of await api("GET", "/api/offers")) show(b);
    }
  } catch (e) { showError(e.message); }
  document.body.dataset.ready = "true";
}

main();
