-- Feed one attempt's outcome to the breaker and apply the state machine.
--
-- KEYS[1..4]  the breaker of one deployment (see breaker_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2..9]  the configuration (see `config` in breaker_lib.lua)
-- ARGV[10]    verdict: 'ok', 'fail', 'rate_limit' (a failure that also counts toward consecutive_429),
--             or 'ignore' (not evidence either way: a client error, or a probe slot given back unused)
-- ARGV[11]    probe: '' for an ordinary call, a ticket from allow, or '*' for "a probe, ticket unknown"
-- ARGV[12]    failure kind, for the transition's reason
--
-- Closed: ok/fail go into the window; opens on the failure rate (with min_calls), on min_calls
-- failures in a row, or on consecutive rate limits. Half-open: a live probe's success counts toward closing, its failure re-opens at once.
-- A probe whose ticket is no longer live (another episode, or its lease ran out) counts as an ordinary
-- call. Outcomes of ordinary calls while open or half-open are ignored: they were sent before the
-- breaker opened and say nothing about recovery.
--
-- Returns {state, transitions...} (flat groups of four: from, to, at, reason).
local now = clock(ARGV[1])
local c = config(2)
local verdict, probe, kind = ARGV[10], ARGV[11], ARGV[12]
local st = load(KEYS[1])
local moves = {}
tick(KEYS, st, now, c, moves)

local function take_probe()
  if probe == '' or st.s ~= 'half_open' then return false end
  if probe == '*' then return #redis.call('ZPOPMIN', KEYS[3]) > 0 end
  return redis.call('ZREM', KEYS[3], probe) == 1
end

local function judge_probe()
  if verdict == 'ok' then
    st.ok, st.dirty = st.ok + 1, true
    if st.ok >= c.probes then transition(KEYS, st, 'closed', now, st.ok .. ' probes succeeded', moves) end
  elseif verdict ~= 'ignore' then
    transition(KEYS, st, 'open', now, 'probe failed: ' .. kind, moves)
  end
end

local function count_call()
  local idx = string.format('%.0f', bucket_of(now, c))
  redis.call('HINCRBY', KEYS[2], 'c:' .. idx, 1)
  if verdict ~= 'ok' then redis.call('HINCRBY', KEYS[2], 'f:' .. idx, 1) end
  redis.call('PEXPIRE', KEYS[2], math.ceil(c.window * 2000))
  if verdict == 'rate_limit' then st.consec = st.consec + 1 else st.consec = 0 end
  if verdict == 'ok' then st.run = 0 else st.run = st.run + 1 end
  st.dirty = true
  local calls, fails = window_totals(KEYS[2], now, c, true)
  if st.consec >= c.consec then
    transition(KEYS, st, 'open', now, st.consec .. ' rate limits in a row', moves)
  elseif calls >= c.min_calls and fails / calls >= c.rate then
    transition(KEYS, st, 'open', now, string.format('%d of %d calls failed in %gs (last: %s)', fails, calls,
                                                     c.window, kind), moves)
  elseif st.run >= c.min_calls and fails >= c.min_calls then
    -- A provider that just went down fails every call while the window still holds the successes
    -- of a busy minute: min_calls failures in a row (within the window) open it without waiting.
    transition(KEYS, st, 'open', now, st.run .. ' failures in a row (last: ' .. kind .. ')', moves)
  end
end

if take_probe() then
  judge_probe()
elseif st.s == 'closed' and verdict ~= 'ignore' then
  count_call()
end
save(KEYS[1], st)

local out = {st.s}
for _, v in ipairs(moves) do out[#out + 1] = v end
return out
