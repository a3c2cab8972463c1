-- The heartbeat of one process's calls in flight: renew all their attempt leases in one round trip.
--
-- KEYS[i]          {gw}:lease:<job>   string: the token of the job's current dispatch, with a TTL
-- ARGV[i]          the token this process holds for KEYS[i]
-- ARGV[#KEYS + 1]  lease length in milliseconds
--
-- A lease still holding the process's token is extended; one that is gone (Redis restarted empty)
-- is taken back, so a live call keeps its lease through a Redis restart; one holding another token
-- (the job was dispatched again meanwhile) is left alone. Returns, per key, 1 when the process still
-- holds the lease, 0 when it lost it.
local ttl = ARGV[#KEYS + 1]
local held = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == false or current == ARGV[i] then
    redis.call('SET', key, ARGV[i], 'PX', ttl)
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
