-- Extend the leases of dispatches still waiting in the broker, in one round trip.
--
-- KEYS[i]          {gw}:lease:<job>   string: the token of the job's current dispatch, with a TTL
-- ARGV[i]          the token the waiting message carries for KEYS[i]
-- ARGV[#KEYS + 1]  lease length in milliseconds
--
-- Only a lease that still holds the message's token is extended: one that is gone was given up
-- (recovery may be dispatching the job again) and one holding another token belongs to a newer
-- dispatch. Returns how many were extended.
local ttl = ARGV[#KEYS + 1]
local extended = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('PEXPIRE', key, ttl)
    extended = extended + 1
  end
end
return extended
