-- Take one retry from a deployment's retry budget, or refuse.
--
-- KEYS[1]  {gw}:retry:<deployment>:req:<minute>   attempts sent to the deployment this minute
-- KEYS[2]  {gw}:retry:<deployment>:ret:<minute>   retries admitted this minute
-- ARGV[1]  ratio: retries may be at most this share of the minute's attempts (e.g. 0.1)
-- ARGV[2]  floor: retries always allowed per minute, so a quiet deployment can still retry
-- ARGV[3]  TTL of the counters in seconds
--
-- Returns 1 and counts the retry when it fits, else 0. Check and count are one step so many
-- workers failing at once can't all squeeze through the last slot.
local attempts = tonumber(redis.call('GET', KEYS[1]) or '0')
local retries = tonumber(redis.call('GET', KEYS[2]) or '0')
if retries + 1 > math.max(tonumber(ARGV[2]), attempts * tonumber(ARGV[1])) then
  return 0
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
