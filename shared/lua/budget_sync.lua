-- Header sync of a deployment's buckets, and their headroom adapting to what the provider says.
--
-- Each bucket is lowered to what the provider's headers say is left (never raised), less the slice
-- of the provider's bucket the gateway keeps out of (its headroom). The headroom (hr, budget_lib.lua)
-- follows the evidence, multiplicatively on the margin (1 - hr):
--   the provider refused a call (429)          margin x 2, at least the configured one: it counted
--                                              more than the mirror did
--   the headers show less than the mirror      margin x 1.25   (by more than 1% of the capacity)
--   the headers agree                          margin x 0.97   up to the most headroom
-- so the mirror creeps up to the provider's whole limit while nothing contradicts it, and steps back
-- at once when something does (traffic the gateway does not see, estimates that undercount).
--
-- KEYS[1..]   {gw}:budget:<name>      deployment buckets (see budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     '1' when the answer was a 429 from the provider
-- ARGV[3..]   per bucket, seven values: remaining ('' when the headers do not say), the provider's
--             capacity, capacity and rate at the configured headroom, the configured headroom, the
--             least and the most headroom
--
-- Returns the new levels (strings), in KEYS order.
local GROW, SHRINK, BACK_OFF, TOLERANCE = 0.97, 1.25, 2.0, 0.01
local now = clock(ARGV[1])
local refused = ARGV[2] == '1'
local out = {}
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 7
  local remaining, provider_cap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local cap, rate, base = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local least, most = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local v = redis.call('HMGET', KEYS[i], 'level', 'ts', 'hr')
  local hr = tonumber(v[3]) or base
  local level, ts = refilled(v[1], v[2], cap * hr / base, rate * hr / base, now)
  local margin = 1 - hr
  if remaining then
    local target = remaining - math.max(0, provider_cap - cap * hr / base)
    if target < level - TOLERANCE * cap * hr / base then margin = margin * SHRINK else margin = margin * GROW end
    if target < level then level = target end
  end
  if refused then margin = math.max(margin * BACK_OFF, 1 - base) end
  hr = math.min(most, math.max(least, 1 - margin))
  local new_cap = cap * hr / base
  level = clamp(level, new_cap)
  redis.call('HSET', KEYS[i], 'level', fmt(level), 'ts', fmt(ts), 'cap', fmt(new_cap), 'rate', fmt(rate * hr / base),
             'hr', fmt(hr))
  out[i] = fmt(level)
end
return out
