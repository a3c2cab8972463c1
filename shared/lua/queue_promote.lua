-- Move retries whose not-before time has come from the delayed set to the front of their queues.
--
-- KEYS[1]            {gw}:delayed                  sorted set: envelope JSON scored by not-before
-- KEYS[2]            {gw}:wake                     list the scheduler blocks on
-- KEYS[3+4(i-1)..]   for due entry i: {gw}:wait:<lane>:<tenant>, {gw}:active:<lane>, {gw}:waiting:<lane>,
--                    {gw}:waiting_tokens:<lane>    (its queue and its lane's bookkeeping, as a push)
-- ARGV[3(i-1)+1..]   for due entry i: the entry as stored in the delayed set, its tenant, its estimate
--
-- Returns how many were moved. A retry goes to the front: it has waited its turn already. An entry
-- no longer in the delayed set (moved meanwhile) is skipped, so none is ever moved twice.
local moved = 0
for i = 0, (#ARGV / 3) - 1 do
  local raw, tenant, estimate = ARGV[3 * i + 1], ARGV[3 * i + 2], tonumber(ARGV[3 * i + 3]) or 0
  local queue, active, count, tokens = KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i], KEYS[6 + 4 * i]
  if redis.call('ZREM', KEYS[1], raw) == 1 then
    redis.call('LPUSH', queue, raw)
    redis.call('SADD', active, tenant)
    redis.call('INCR', count)
    redis.call('INCRBY', tokens, estimate)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, 0)
end
return moved
