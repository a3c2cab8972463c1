-- Read bucket levels refilled to now, changing nothing (admin endpoint, metrics, the api's look at a
-- dollar budget before it queues a job).
--
-- KEYS[1..]   token buckets {gw}:budget:<name> or window buckets {gw}:spend:<name> (budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
--
-- Returns one string per key: a token bucket's level, or '' for one never used (it is full); a window
-- bucket's USD left under its cap (cap - spent), or '' when Redis does not hold it (not seeded yet).
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = redis.call('HMGET', key, 'spent', 'cap')
  if window[1] then
    out[i] = fmt((tonumber(window[2]) or 0) - tonumber(window[1]))
  else
    local cap, rate = shape(key)
    if cap then
      local level = refill(key, cap, rate, now)
      out[i] = fmt(level)
    else
      out[i] = ''
    end
  end
end
return out
