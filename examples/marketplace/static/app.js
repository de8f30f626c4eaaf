// The marketplace page: a customer's broadcasts with their live state and timeline, or a
// transporter's open offers, appearing and vanishing live. Plain JS, no build step.
"use strict";

const CLOSED = new Set(["fully_filled", "in_progress", "completed", "cancelled", "expired"]);
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("token");
const $ = (selector) => document.querySelector(selector);
const known = new Map(); // "booking-1" -> highest version seen (kept after removal: a late read cannot revive it)
const seenEvents = new Set(); // eventIds, to drop at-least-once duplicates

function key(kind, id) { return `${kind}-${id}`; }

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
  const data = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${data.error}: ${data.reason || data.message}`);
  return data;
}

function isNewer(kind, id, version) {
  const k = key(kind, id);
  if ((known.get(k) || 0) > version) return false;
  known.set(k, version);
  return true;
}

// -- transporter view ------------------------------------------------------------------------

function renderOffer(b) {
  let li = document.getElementById(`offer-${key(b.kind, b.id)}`);
  if (!li) {
    li = document.createElement("li");
    li.id = `offer-${key(b.kind, b.id)}`;
    li.className = "offer card";
    li.innerHTML = `<span class="title"></span> <span class="status"></span> <span class="slots"></span>
      <span class="deadline"></span><br><button class="accept" type="button">Accept</button>
      <button class="release" type="button">Release</button><span class="result"></span>`;
    li.querySelector(".accept").addEventListener("click", () => act(li, "accept"));
    li.querySelector(".release").addEventListener("click", () => act(li, "release"));
    $("#offers").appendChild(li);
  }
  Object.assign(li.dataset, { kind: b.kind, id: String(b.id), status: b.status, version: String(b.version),
                              expiresAt: b.expiresAt || "" });
  li.querySelector(".title").textContent = `${b.kind} #${b.id}`;
  li.querySelector(".status").textContent = b.status;
  li.querySelector(".slots").textContent = `${b.slotsFilled}/${b.slotsRequested} filled`;
  li.querySelector(".deadline").textContent = b.expiresAt ? `until ${new Date(b.expiresAt).toLocaleTimeString()}` : "";
  $("#offers-empty").hidden = $("#offers").children.length > 0;
}

function removeOffer(kind, id) {
  document.getElementById(`offer-${key(kind, id)}`)?.remove();
  $("#offers-empty").hidden = $("#offers").children.length > 0;
}

function onTransporterEvent(name, p) {
  if (!isNewer(p.kind, p.entityId, p.version)) return;
  const b = { kind: p.kind, id: p.entityId, status: p.status, version: p.version, slotsFilled: p.slotsFilled,
              slotsRequested: p.slotsRequested, expiresAt: p.expiresAt };
  if (CLOSED.has(p.status)) removeOffer(p.kind, p.entityId);
  else if (name.endsWith("_OFFERED") || document.getElementById(`offer-${key(p.kind, p.entityId)}`)) renderOffer(b);
}

async function act(li, action) {
  const result = li.querySelector(".result");
  try {
    const b = await api("POST", `/api/${li.dataset.kind}s/${li.dataset.id}/${action}`, {});
    result.textContent = ` ${action === "accept" ? "accepted" : "released"}: ${b.slotsFilled}/${b.slotsRequested} filled`;
  } catch (e) { result.textContent = ` ${e.message}`; }
}

// -- customer view ---------------------------------------------------------------------------

function renderBroadcast(b) {
  let card = document.getElementById(`broadcast-${key(b.kind, b.id)}`);
  if (!card) {
    card = document.createElement("article");
    card.id = `broadcast-${key(b.kind, b.id)}`;
    card.className = "broadcast card";
    card.innerHTML = `<span class="title"></span>: <span class="status"></span> <span class="slots"></span>
      <div class="actions"><button type="button" data-action="cancel">Cancel</button>
      <button type="button" data-action="start-trip">Start trip</button>
      <button type="button" data-action="complete">Complete</button><span class="result"></span></div>
      <ol class="timeline"></ol>`;
    for (const button of card.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => ownerAction(card, button.dataset.action));
    }
    $("#broadcasts").prepend(card);
  }
  Object.assign(card.dataset, { kind: b.kind, id: String(b.id), status: b.status, version: String(b.version) });
  card.querySelector(".title").textContent = `${b.kind} #${b.id}`;
  card.querySelector(".status").textContent = b.status;
  card.querySelector(".slots").textContent = `${b.slotsFilled}/${b.slotsRequested} filled`;
  $("#broadcasts-empty").hidden = true;
  return card;
}

function addTimeline(card, entry) {
  const li = document.createElement("li");
  Object.assign(li.dataset, { event: entry.event, status: entry.status, version: String(entry.version) });
  const announced = entry.event === "BROADCAST_STATE_CHANGED" || entry.event === "history" ? "" : ` ${entry.event}`;
  li.textContent = `v${entry.version} ${entry.status} (${entry.trigger}${entry.reason ? `: ${entry.reason}` : ""})${announced}`;
  card.querySelector(".timeline").appendChild(li);
}

function onCustomerEvent(name, p) {
  const current = document.getElementById(`broadcast-${key(p.kind, p.entityId)}`);
  const b = { kind: p.kind, id: p.entityId, status: p.status, version: p.version, slotsFilled: p.slotsFilled,
              slotsRequested: p.slotsRequested };
  const card = isNewer(p.kind, p.entityId, p.version) || !current ? renderBroadcast(b) : current;
  addTimeline(card, { event: name, status: p.status, version: p.version, trigger: p.trigger, reason: p.reason });
}

async function ownerAction(card, action) {
  const result = card.querySelector(".result");
  try {
    await api("POST", `/api/${card.dataset.kind}s/${card.dataset.id}/${action}`, {});
    result.textContent = "";
  } catch (e) { result.textContent = ` ${e.message}`; }
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
  } catch (e) { showError(e.message); }
}

// -- start -----------------------------------------------------------------------------------

async function main() {
  if (!token) { $("#connection").dataset.state = "refused"; $("#connection").textContent = "no token"; return; }
  sessionStorage.setItem("token", token);
  let me;
  try { me = await api("GET", "/api/me"); } catch (e) { showError(e.message); return; }
  document.body.dataset.role = me.role;
  document.body.dataset.user = me.id;
  $("#who").textContent = `Signed in as ${me.role} ${me.id}.`;
  const onEvent = me.role === "customer" ? onCustomerEvent : onTransporterEvent;
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
  if (me.role === "customer") {
    $("#customer-view").hidden = false;
    $("#create-booking").addEventListener("submit", createBooking);
    for (const b of (await api("GET", "/api/broadcasts")).reverse()) {
      if (!isNewer(b.kind, b.id, b.version)) continue;
      const card = renderBroadcast(b);
      for (const h of (await api("GET", `/api/${b.kind}s/${b.id}`)).history) {
        addTimeline(card, { event: "history", status: h.to, version: h.version, trigger: h.trigger, reason: h.reason });
      }
    }
  } else {
    $("#transporter-view").hidden = false;
    for (const b of await api("GET", "/api/offers")) {
      if (isNewer(b.kind, b.id, b.version)) renderOffer(b);
    }
  }
  document.body.dataset.ready = "true";
}

main();
