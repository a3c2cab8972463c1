-- Wake the scheduler for a refund, when something waits that the refund could admit.
--
-- KEYS[1]      {gw}:wake               list the scheduler blocks on (one token in it at most)
-- KEYS[2]      {gw}:delayed            retries waiting out their backoff
-- KEYS[3..]    {gw}:waiting:<lane>     how many jobs wait in each lane
--
-- Returns 1 when it woke the scheduler, 0 when nothing waits: a refund then has nothing to admit, and
-- an arrival wakes the scheduler itself. A fast-lane call waits in no queue, so it costs the
-- scheduler no round.
local waiting = redis.call('ZCARD', KEYS[2]) > 0
for i = 3, #KEYS do
  if waiting then break end
  waiting = (tonumber(redis.call('GET', KEYS[i]) or '0') or 0) > 0
end
if not waiting then
  return 0
end
redis.call('LPUSH', KEYS[1], '1')
redis.call('LTRIM', KEYS[1], 0, 0)
return 1
