// The operators' console: reads /v1/admin/overview and /v1/admin/jobs every two seconds and renders them.
// Every value is written with textContent (tenant, feature and error strings come from callers).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const POLL_MS = 2000;
let selectedJob = null;

async function getJson(path) {
  const response = await fetch(path, {headers: {"X-Gateway-CSRF": CSRF}, credentials: "same-origin"});
  if (response.status === 401) {  // the session ended: the page itself shows the login form
    window.location.reload();
    throw new Error("logged out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function fill(testid, rows) {
  const body = document.querySelector(`[data-testid="${testid}"] tbody`);
  body.replaceChildren(...rows);
  const empty = document.querySelector(`[data-testid="${testid}-empty"]`);
  if (empty) empty.hidden = rows.length > 0;
}

const seconds = (s) => s === null || s === undefined ? "-" : s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
const number = (n) => Math.round(n).toLocaleString("en");
const compact = new Intl.NumberFormat("en", {notation: "compact", maximumFractionDigits: 1});
const dollars = (n) => `$${n.toFixed(4)}`;
const percent = (x) => `${(100 * x).toFixed(0)}%`;

function gauge(bucket) {
  const share = bucket.capacity > 0 ? Math.max(0, Math.min(1, bucket.level / bucket.capacity)) : 0;
  const bar = el("div", null, {class: "gauge", title: `${number(bucket.level)} of ${number(bucket.capacity)}`});
  const fillBar = el("span", null, {class: share < 0.1 ? "low" : share < 0.3 ? "mid" : "ok"});
  fillBar.style.width = `${(100 * share).toFixed(1)}%`;
  bar.appendChild(fillBar);
  const cell = el("td");
  cell.append(bar, el("small", `${compact.format(bucket.level)} / ${compact.format(bucket.capacity)}`));
  return cell;
}

function renderStatus(view) {
  const leader = view.scheduler.leader ? "scheduler leading" : "NO SCHEDULER LEADING";
  const text = `${leader} · ${view.processes.worker.length} worker(s), ${view.processes.scheduler.length} ` +
    `scheduler(s) alive · updated ${new Date(view.at * 1000).toLocaleTimeString()}`;
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = view.scheduler.leader && view.processes.worker.length ? "" : "alarm";
}

function renderQueues(view) {
  fill("queues", view.queues.map((q) => {
    const deadline = view.lanes[q.lane].deadline_s;
    const share = q.oldest_age_s === null ? null : q.oldest_age_s / deadline;
    const shareCell = el("td", share === null ? "-" : percent(share), {class: share > 0.5 ? "alarm" : ""});
    return row([q.lane, q.tenant, el("td", number(q.waiting), {"data-testid": "waiting"}), seconds(q.oldest_age_s),
      shareCell], {"data-lane": q.lane, "data-tenant": q.tenant});
  }));
}

function renderDeployments(view) {
  const byDeployment = new Map();
  for (const b of view.buckets.filter((b) => b.scope.level === "deployment" || b.scope.level === "lane")) {
    if (!byDeployment.has(b.scope.deployment)) byDeployment.set(b.scope.deployment, []);
    byDeployment.get(b.scope.deployment).push(b);
  }
  const cards = [];
  for (const [name, buckets] of byDeployment) {
    const card = el("div", null, {class: "card", "data-deployment": name});
    const breaker = view.breakers[name];
    card.appendChild(el("h3", name));
    if (breaker) card.appendChild(el("span", breaker.state, {class: `state ${breaker.state}`}));
    const table = el("table");
    table.appendChild(row(["bucket", "left of capacity", "reserved (attempts)"].map((h) => el("th", h))));
    for (const b of buckets) {
      const label = b.scope.level === "lane" ? `${b.scope.axis} (${b.scope.lane} ceiling)` : b.scope.axis;
      table.appendChild(row([label, gauge(b), `${compact.format(b.reserved)} in ${b.reservations}`]));
    }
    card.appendChild(table);
    cards.push(card);
  }
  document.getElementById("deployments").replaceChildren(...cards);
}

function renderBreakers(view) {
  fill("breakers", Object.entries(view.breakers).map(([name, b]) => row(
    [name, el("td", b.state, {class: `state ${b.state}`}), percent(b.failure_rate), b.consecutive_429, b.calls],
    {"data-deployment": name})));
}

function renderFailures(view) {
  const minutes = view.failures_per_minute;
  const deployments = new Set();
  for (const minute of [minutes.previous, minutes.current]) {
    for (const counts of Object.values(minute)) Object.keys(counts).forEach((d) => deployments.add(d));
  }
  const count = (minute, what, d) => (minute[what] || {})[d] || 0;
  const others = (minute, d) => Object.entries(minute)
    .filter(([what]) => what.startsWith("status:") && what !== "status:rate_limit")
    .reduce((sum, [, counts]) => sum + (counts[d] || 0), 0);
  const pair = (f) => `${f(minutes.previous)} / ${f(minutes.current)}`;
  fill("failures", [...deployments].sort().map((d) => row([
    d, pair((m) => count(m, "status:rate_limit", d)), pair((m) => others(m, d)), pair((m) => count(m, "retry:retry", d)),
    pair((m) => count(m, "retry:budget_exhausted", d))], {"data-deployment": d})));
}

function renderTenantBudgets(view) {
  fill("tenant-budgets", view.buckets.filter((b) => b.scope.level === "tenant" || b.scope.level === "feature")
    .map((b) => row([b.scope.tenant, b.scope.feature || "(all)", b.scope.limit, gauge(b),
      `${number(b.reserved)} in ${b.reservations}`])));
}

function renderCost(view) {
  fill("cost", view.cost_today.map((c) => row([c.tenant, c.feature, number(c.jobs),
    `${number(c.tokens_in)} / ${number(c.tokens_out)}`, dollars(c.cost_usd)],
  {"data-tenant": c.tenant, "data-feature": c.feature})));
  document.getElementById("cache").textContent =
    view.cache_hit_rate === null ? "" : `cache hit rate ${percent(view.cache_hit_rate)}`;
}

function filters() {
  const form = new FormData(document.getElementById("job-filters"));
  const query = new URLSearchParams({limit: "20"});
  for (const [name, value] of form) if (String(value).trim()) query.set(name, String(value).trim());
  return query;
}

async function refreshJobs() {
  const error = document.getElementById("jobs-error");
  try {
    const page = await getJson(`/v1/admin/jobs?${filters()}`);
    error.textContent = "";
    fill("jobs", page.data.map((job) => {
      const tr = row([new Date(job.created_at * 1000).toLocaleTimeString(), job.id, job.tenant, job.feature,
        job.priority, el("td", job.status, {class: `status ${job.status}`}), job.deployment || "-",
        job.queued_ms === null ? "-" : `${job.queued_ms} ms`, job.attempts, dollars(job.cost_usd)],
      {"data-job": job.id});
      tr.addEventListener("click", () => { selectedJob = job.id; refreshJob(); });
      return tr;
    }));
  } catch (e) {
    error.textContent = e.message;
  }
}

async function refreshJob() {
  if (!selectedJob) return;
  const panel = document.getElementById("job-detail");
  panel.hidden = false;
  try {
    const job = await getJson(`/v1/admin/jobs/${encodeURIComponent(selectedJob)}`);
    panel.querySelector("h3").textContent = `${job.id}: ${job.status} (${job.tenant} / ${job.feature}, ${job.model})`;
    panel.querySelector(".error").textContent = job.error ? `${job.error.type}: ${job.error.message}` : "";
    panel.querySelector("tbody").replaceChildren(...job.attempt_list.map((a) => row([a.number, a.deployment, a.status,
      a.http_status || "-", a.latency_ms === null ? "-" : `${a.latency_ms} ms`, `${a.tokens_in} / ${a.tokens_out}`,
      dollars(a.cost_usd), a.error || ""])));
  } catch (e) {
    panel.querySelector(".error").textContent = e.message;
  }
}

async function refresh() {
  try {
    const view = await getJson("/v1/admin/overview");
    for (const render of [renderStatus, renderQueues, renderDeployments, renderBreakers, renderFailures,
      renderTenantBudgets, renderCost]) render(view);
  } catch (e) {
    const status = document.getElementById("status");
    status.textContent = `cannot read the overview: ${e.message}`;
    status.className = "alarm";
  }
  await refreshJobs();
  await refreshJob();
}

document.getElementById("job-filters").addEventListener("input", refreshJobs);
document.getElementById("job-filters").addEventListener("submit", (e) => { e.preventDefault(); refreshJobs(); });
refresh();
setInterval(refresh, POLL_MS);
