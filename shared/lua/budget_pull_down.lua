-- Header sync: lower buckets to what the provider says is left. Never raises a level.
--
-- KEYS[1..]   {gw}:budget:<name>      the buckets (see budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2..]   per bucket, three values: remaining, capacity, rate
--
-- Returns the new levels (strings), in KEYS order.
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 3
  local remaining, cap, rate = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local level, ts = refill(KEYS[i], cap, rate, now)
  if remaining < level then level = clamp(remaining, cap) end
  save(KEYS[i], level, ts, cap, rate)
  out[i] = fmt(level)
end
return out
