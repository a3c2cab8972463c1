-- Drop the attempt lease once the attempt is recorded, unless a newer dispatch holds it.
--
-- KEYS[1]  {gw}:lease:<job>
-- ARGV[1]  the token of the attempt that finished
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
