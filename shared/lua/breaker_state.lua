-- Read the breakers of several deployments, changing nothing (admin endpoint, metrics, routing).
-- An open breaker whose open_s has passed reads as half-open with every probe slot free: the move
-- itself is written by the next allow or record.
--
-- KEYS[4i-3 .. 4i]   the breaker of deployment i (see breaker_lib.lua)
-- ARGV[1]            now (seconds) or '' for the Redis clock
-- ARGV[2+8(i-1) ..]  the configuration of deployment i (8 values, see `config` in breaker_lib.lua)
--
-- Returns per deployment a JSON object: state, calls, failures, consecutive_429, opened_at,
-- half_open_at, probes_in_flight, probes_ok, retry_in_s, since, now.
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS / 4 do
  local keys = {KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]}
  local c = config(2 + 8 * (i - 1))
  local st = load(keys[1])
  local calls, fails = window_totals(keys[2], now, c, false)
  local due = st.opened_at + c.open_s
  local view = {state = st.s, calls = calls, failures = fails, consecutive_429 = st.consec,
                opened_at = fmt(st.opened_at), half_open_at = fmt(due), probes_in_flight = 0,
                probes_ok = st.ok, retry_in_s = '0', since = redis.call('HGET', keys[1], 'since') or '',
                now = fmt(now)}
  if st.s == 'open' and now >= due then
    view.state, view.probes_ok = 'half_open', 0
  elseif st.s == 'open' then
    view.retry_in_s = fmt(due - now)
  elseif st.s == 'half_open' then
    view.probes_in_flight = live_probes(keys[3], now, c, false)
  end
  if st.s == 'closed' then view.opened_at, view.half_open_at = '', '' end
  out[i] = cjson.encode(view)
end
return out
