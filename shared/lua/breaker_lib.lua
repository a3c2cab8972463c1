-- Shared prelude of the breaker scripts; shared.lua.script puts it in front of every breaker_* script.
--
-- One deployment's breaker is four keys (KEYS order in every script, 4 per deployment):
--   +0  {gw}:breaker:<dep>:state   hash: s (closed | open | half_open), opened_at, consec (rate-limit
--                                  failures in a row), ok (probe successes this half-open), seq (last
--                                  probe ticket), since (time of the last transition)
--   +1  {gw}:breaker:<dep>:window  hash: c:<bucket> calls, f:<bucket> failures; bucket = floor(now / width)
--   +2  {gw}:breaker:<dep>:probes  sorted set: tickets of half-open probes in flight, scored by admission
--   +3  {gw}:breaker:<dep>:log     list: the last transitions, newest first, JSON {from, to, at, reason}
--
-- The configuration travels with every call (8 values, see `config`), so processes need no shared
-- config store and a config change takes effect on the next call. Numbers go back as strings (17
-- significant digits): Lua numbers become integer replies, which would truncate fractions.

local LOG_SIZE = 100

-- fmt(x) and clock(arg) come from shared/lua/common.lua, put in front of this file.

-- ARGV[a .. a+7]: window_s, buckets, min_calls, failure_rate, consecutive_429, open_s, probes,
-- probe_timeout_s.
local function config(a)
  local c = {window = tonumber(ARGV[a]), buckets = tonumber(ARGV[a + 1]), min_calls = tonumber(ARGV[a + 2]),
             rate = tonumber(ARGV[a + 3]), consec = tonumber(ARGV[a + 4]), open_s = tonumber(ARGV[a + 5]),
             probes = tonumber(ARGV[a + 6]), probe_timeout = tonumber(ARGV[a + 7])}
  c.width = c.window / c.buckets
  return c
end

local function load(key)
  local v = redis.call('HMGET', key, 's', 'opened_at', 'consec', 'ok', 'seq', 'run')
  return {s = v[1] or 'closed', opened_at = tonumber(v[2]) or 0, consec = tonumber(v[3]) or 0,
          ok = tonumber(v[4]) or 0, seq = tonumber(v[5]) or 0, run = tonumber(v[6]) or 0, dirty = false}
end

local function save(key, st)
  if not st.dirty then return end
  redis.call('HSET', key, 's', st.s, 'opened_at', fmt(st.opened_at), 'consec', st.consec, 'ok', st.ok,
             'seq', st.seq, 'run', st.run)
end

local function bucket_of(now, c)
  return math.floor(now / c.width)
end

-- Calls and failures in the buckets of the last window. With `prune`, buckets that slid out are deleted.
local function window_totals(key, now, c, prune)
  local current = bucket_of(now, c)
  local flat = redis.call('HGETALL', key)
  local calls, fails, stale = 0, 0, {}
  for i = 1, #flat, 2 do
    local idx = tonumber(string.sub(flat[i], 3))
    local n = tonumber(flat[i + 1])
    if idx <= current - c.buckets then
      stale[#stale + 1] = flat[i]
    elseif idx <= current then
      if string.sub(flat[i], 1, 1) == 'c' then calls = calls + n else fails = fails + n end
    end
  end
  if prune and #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return calls, fails
end

-- Move to state `to`, resetting what the new state starts from, and log the move.
local function transition(keys, st, to, at, reason, moves)
  local from = st.s
  st.s, st.dirty = to, true
  redis.call('DEL', keys[3])
  st.ok = 0
  st.run = 0
  if to == 'open' then
    st.opened_at, st.consec = at, 0
  elseif to == 'closed' then
    st.consec = 0
    redis.call('DEL', keys[2])
  end
  redis.call('HSET', keys[1], 'since', fmt(at))
  redis.call('LPUSH', keys[4], cjson.encode({from = from, to = to, at = fmt(at), reason = reason}))
  redis.call('LTRIM', keys[4], 0, LOG_SIZE - 1)
  local n = #moves
  moves[n + 1], moves[n + 2], moves[n + 3], moves[n + 4] = from, to, fmt(at), reason
end

-- The half-open timer, run lazily by every call that may write: open becomes half-open once `open_s`
-- has passed, stamped at the moment it became due (not when someone happened to look).
local function tick(keys, st, now, c, moves)
  local due = st.opened_at + c.open_s
  if st.s == 'open' and now >= due then
    transition(keys, st, 'half_open', due, 'open for ' .. c.open_s .. 's', moves)
  end
end

-- Probes in flight after dropping those whose caller never reported within probe_timeout.
local function live_probes(key, now, c, prune)
  if prune then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - c.probe_timeout)
    return redis.call('ZCARD', key)
  end
  return redis.call('ZCOUNT', key, '(' .. fmt(now - c.probe_timeout), '+inf')
end

-- Seconds until the oldest live probe's slot frees (its lease ends), for a caller turned away.
local function next_probe_slot(key, now, c)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #oldest == 0 then return 0 end
  return math.max(0, tonumber(oldest[2]) + c.probe_timeout - now)
end
