-- Pop up to N job envelopes from one waiting queue, keeping the bookkeeping exact.
--
-- KEYS[1]  {gw}:wait:<lane>:<tenant>   list of envelopes (JSON), oldest first
-- KEYS[2]  {gw}:active:<lane>          set of tenants with something waiting in the lane
-- KEYS[3]  {gw}:waiting:<lane>         integer: envelopes waiting in the lane, all tenants
-- KEYS[4]  {gw}:waiting_tokens:<lane>  integer: estimated tokens of those envelopes
-- KEYS[5]  {gw}:queued_ids             set: ids of every job Redis holds as waiting
-- ARGV[1]  tenant
-- ARGV[2]  N, how many to pop at most
--
-- Returns the popped envelopes. Done in one script so a concurrent push can never leave a
-- non-empty queue whose tenant is missing from the active set.
local popped = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
if not popped then
  redis.call('SREM', KEYS[2], ARGV[1])
  return {}
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
local left = redis.call('DECRBY', KEYS[3], #popped)
if left < 0 then
  redis.call('SET', KEYS[3], 0)
end
local tokens = 0
for _, raw in ipairs(popped) do
  -- An entry that is not valid JSON (corrupted) is popped all the same; the scheduler fails its job.
  local ok, env = pcall(cjson.decode, raw)
  if ok and type(env) == 'table' then
    tokens = tokens + (tonumber(env['tokens'] or env['estimate']) or 0)  -- 'estimate': an older version's
    if type(env['id']) == 'string' then
      redis.call('SREM', KEYS[5], env['id'])
    end
  end
end
if redis.call('DECRBY', KEYS[4], tokens) < 0 then
  redis.call('SET', KEYS[4], 0)
end
return popped
