-- A worker claims the attempt lease of the dispatch it received, or learns it was superseded.
--
-- KEYS[1]  {gw}:lease:<job>     string: the token of the job's current dispatch, with a TTL
-- KEYS[2]  (optional) a counter to add 1 to when the claim succeeds: the deployment's attempts this
--          minute, which the retry budget is measured against (shared/retry.py)
-- ARGV[1]  the token the worker's message carries
-- ARGV[2]  lease length in milliseconds (the attempt's total timeout plus a margin)
-- ARGV[3]  (with KEYS[2]) the counter's TTL in seconds
--
-- Returns 1 when the worker may send the attempt (its token is current, or the lease is gone, e.g.
-- Redis restarted), 0 when the job was dispatched again since (a redelivered stale message).
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if KEYS[2] then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
