// An open-loop HTTP load generator in Node.js, independent of the project's Python clients.
// Arrivals at a fixed rate (each request starts on its own schedule, whether earlier ones answered or not),
// over keep-alive connections; each request's latency from when it was sent, and how late the sends were
// against their schedule (Node's timers wake within ~1 ms). Prints one JSON object: latencies in ms, errors.
//   node ops/openloop.js URL BEARER_KEY RATE SECONDS BODY_JSON   ("[<id>]" in the body becomes a fresh id)
"use strict";
const http = require("http");
const [url, key, rate, seconds, body] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const total = Math.round(Number(rate) * Number(seconds));
const latencies = [];
const late = [];
let errors = 0, done = 0, statuses = {};
const run = Math.random().toString(36).slice(2, 8);
const start = process.hrtime.bigint();

function send(i, due) {
  const payload = body.replaceAll("[<id>]", `${run}-${i}`);
  const sent = process.hrtime.bigint();
  late.push(Number(sent - due) / 1e6);
  const req = http.request({
    host: target.hostname, port: target.port, path: target.pathname, method: "POST", agent,
    headers: { "content-type": "application/json", "authorization": `Bearer ${key}`,
               "content-length": Buffer.byteLength(payload) },
  }, (res) => {
    res.on("data", () => {});
    res.on("end", () => {
      statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
      if (res.statusCode === 200) latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
      else errors++;
      finish();
    });
  });
  req.on("error", () => { errors++; finish(); });
  req.end(payload);
}

function finish() {
  if (++done < total) return;
  const pct = (xs, q) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];
  latencies.sort((a, b) => a - b);
  late.sort((a, b) => a - b);
  console.log(JSON.stringify({ requests: total, ok: latencies.length, errors, statuses,
    p50: pct(latencies, 0.5), p90: pct(latencies, 0.9), p99: pct(latencies, 0.99), max: latencies[latencies.length - 1],
    late_p50: pct(late, 0.5), late_p99: pct(late, 0.99) }));
  agent.destroy();
}

let next = 0;
function tick() {  // send every request whose time has come, then sleep until the next one is due
  const now = process.hrtime.bigint();
  while (next < total) {
    const due = start + BigInt(Math.round((next * 1e9) / Number(rate)));
    if (due > now) { setTimeout(tick, Number(due - now) / 1e6); return; }
    send(next++, due);
  }
}
tick();
