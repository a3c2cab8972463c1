-- Read bucket levels refilled to now, changing nothing (admin endpoint, metrics).
--
-- KEYS[1..]   {gw}:budget:<name>      the buckets (see budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
--
-- Returns one string per key: the level, or '' for a bucket never used (it is full).
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local cap, rate = shape(KEYS[i])
  if cap then
    local level = refill(KEYS[i], cap, rate, now)
    out[i] = fmt(level)
  else
    out[i] = ''
  end
end
return out
