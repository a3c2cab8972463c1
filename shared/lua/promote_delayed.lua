-- Move retries whose not-before time has come from the delayed set to the front of their queues.
--
-- KEYS[1]  {gw}:delayed           sorted set: envelope JSON scored by not-before (epoch seconds)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  at most this many
-- ARGV[3]  key prefix of the waiting queues, e.g. "{gw}" (queues are <prefix>:wait:<lane>:<tenant>)
--
-- Returns how many were moved. A retry goes to the front: it has waited its turn already.
-- (The queue keys are derived here, not passed in KEYS; they share the hash tag, so on Redis
-- Cluster they live in the same slot.)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local p = ARGV[3]
local moved = 0
for _, raw in ipairs(due) do
  redis.call('ZREM', KEYS[1], raw)
  -- A corrupted entry is dropped here (its job stays queued in SQL and is expired at its deadline).
  local ok, env = pcall(cjson.decode, raw)
  if ok and type(env) == 'table' and type(env['lane']) == 'string' and type(env['tenant']) == 'string' then
    redis.call('LPUSH', p .. ':wait:' .. env['lane'] .. ':' .. env['tenant'], raw)
    redis.call('SADD', p .. ':active:' .. env['lane'], env['tenant'])
    redis.call('INCR', p .. ':waiting:' .. env['lane'])
    redis.call('INCRBY', p .. ':waiting_tokens:' .. env['lane'], tonumber(env['estimate']) or 0)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('LPUSH', p .. ':wake', '1')
  redis.call('LTRIM', p .. ':wake', 0, 0)
end
return moved
