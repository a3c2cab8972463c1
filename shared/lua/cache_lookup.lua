-- Look up one exact cache entry; on a hit, mark it used (for eviction) and count what it saved.
--
-- KEYS[1]  {gw}:cache:e:<tenant>/<digest>   hash: a (the answer, JSON), c (its cost in USD), j (its job)
-- KEYS[2]  {gw}:cache:lru:<tenant>          sorted set: digest -> last use (ms)
-- KEYS[3]  {gw}:metrics:cache               hash: "<tenant>\t<feature>\t<outcome>" -> count, "...\tsaved" -> USD
-- ARGV[1]  the digest (the member in KEYS[2])
-- ARGV[2]  now, in ms
-- ARGV[3]  "<tenant>\t<feature>" (the metrics labels)
-- ARGV[4]  what a miss counts as: "miss", or "" (not counted again)
-- ARGV[5]  what a hit counts as: "hit", or "semantic" when a semantic match fetches its answer
-- ARGV[6]  (optional) an outcome counted already that this hit takes back: the "miss" the exact
--          lookup before a semantic match counted
--
-- Returns {answer, cost, job} on a hit, false on a miss.
local found = redis.call('HMGET', KEYS[1], 'a', 'c', 'j')
if not found[1] then
  if ARGV[4] ~= '' then
    redis.call('HINCRBY', KEYS[3], ARGV[3] .. '\t' .. ARGV[4], 1)
  end
  return false
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[3] .. '\t' .. ARGV[5], 1)
if ARGV[6] and ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. '\t' .. ARGV[6], -1)
end
redis.call('HINCRBYFLOAT', KEYS[3], ARGV[3] .. '\tsaved', found[2])
return found
