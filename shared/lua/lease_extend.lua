-- Extend the leases of dispatches still waiting for a worker, in one round trip: in the broker's queue
-- (the scheduler, ``scheduler.waiting_dispatches``) or received by a worker and not started yet (its
-- heartbeat, ``execution.lease_keeper``).
--
-- KEYS[i]          {gw}:lease:<job>   string: the token of the job's current dispatch, with a TTL
-- ARGV[i]          the token the waiting message carries for KEYS[i]
-- ARGV[#KEYS + 1]  lease length in milliseconds
--
-- Only a lease that still holds the message's token is extended: one that is gone was given up
-- (recovery may be dispatching the job again) and one holding another token belongs to a newer
-- dispatch. Unlike ``lease_renew`` (a call in flight), a lease Redis forgot is not taken back: a
-- restarted Redis also lost the message, and the worker drops what it had prefetched. Returns, per
-- key, 1 when it was extended, 0 when not.
local ttl = ARGV[#KEYS + 1]
local extended = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('PEXPIRE', key, ttl)
    extended[i] = 1
  else
    extended[i] = 0
  end
end
return extended
