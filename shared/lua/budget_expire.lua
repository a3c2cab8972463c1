-- Drop reservations whose attempt never reported back: their token charges stay (the provider may have
-- served them, and the buckets refill on their own), their dollars are given back (budget_lib's
-- refund_windows: the call is billed by its SQL record, if it ever has one).
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
  drop_reservation(KEYS[1], KEYS[2], id, redis.call('HGET', KEYS[1], id))
end
return #stale
