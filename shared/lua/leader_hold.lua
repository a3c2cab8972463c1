-- Take or renew the scheduler's leader lease.
--
-- KEYS[1]  {gw}:scheduler:leader   string: the holder's instance id, with a TTL
-- ARGV[1]  instance id of the caller
-- ARGV[2]  lease length in milliseconds
--
-- Returns -1 when the caller holds the lease after the call; else the milliseconds the holder's
-- lease has left, so a standby sleeps exactly until it could take over (no polling). Renewal and
-- take-over are one script so a lease that just expired can't be renewed by its old holder after
-- another took it.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return -1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
return redis.call('PTTL', KEYS[1])
