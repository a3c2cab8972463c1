-- Store one answer in the exact cache, and say which of the tenant's entries to evict to stay in its cap.
--
-- KEYS[1]  {gw}:cache:e:<tenant>/<digest>   hash: a (the answer, JSON), c (its cost in USD), j (its job), f (feature)
-- KEYS[2]  {gw}:cache:lru:<tenant>          sorted set: digest -> last use (ms)
-- ARGV[1]  the digest
-- ARGV[2]  now, in ms
-- ARGV[3]  the entry's TTL, in ms
-- ARGV[4]  the tenant's cap (entries)
-- ARGV[5]  the answer (JSON)
-- ARGV[6]  its cost in USD
-- ARGV[7]  the job that paid for it
-- ARGV[8]  the feature that asked
--
-- Returns the digests taken off KEYS[2] (least recently used first): the caller deletes their entries
-- (their keys are built in shared/keys.py, never here).
redis.call('HSET', KEYS[1], 'a', ARGV[5], 'c', ARGV[6], 'j', ARGV[7], 'f', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
-- Entries that expired on their own linger here until they are the least recently used: the set
-- lives as long as its newest entry, and the cap pops the oldest first.
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over <= 0 then
  return {}
end
local popped = redis.call('ZPOPMIN', KEYS[2], over)
local evicted = {}
for i = 1, #popped, 2 do
  evicted[#evicted + 1] = popped[i]
end
return evicted
