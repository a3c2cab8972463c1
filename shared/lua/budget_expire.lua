-- Drop reservations whose attempt never reported back, WITHOUT refund: the provider may have
-- served them, and the buckets refill on their own.
--
-- KEYS[1]     {gw}:budget:resv        hash: reservation id -> JSON record
-- KEYS[2]     {gw}:budget:resv:exp    sorted set: reservation id scored by expiry
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     at most this many per call (keeps one call short; the caller loops)
--
-- Returns how many were dropped.
local now = clock(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(stale) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #stale
