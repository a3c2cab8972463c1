-- Create window buckets (dollar budgets) Redis does not hold, from what the SQL store says was spent:
-- at the first call of a window, and after Redis lost them. A bucket already there is left alone (a
-- concurrent seeder, or one that was seeded and then charged, wins).
--
-- KEYS[1..]   window buckets {gw}:spend:<name>:<window>
-- ARGV[1..]   per key, four values: USD spent so far (SQL), cap, window end (epoch seconds), meta (JSON)
--
-- Each bucket created expires a day after its window ends (a settle that comes late still finds it).
-- Returns how many were created.
local created = 0
for i = 1, #KEYS do
  local a = (i - 1) * 4
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'spent', ARGV[a + 1], 'settled', ARGV[a + 1], 'cap', ARGV[a + 2],
               'ends', ARGV[a + 3], 'meta', ARGV[a + 4])
    redis.call('EXPIREAT', KEYS[i], math.floor(tonumber(ARGV[a + 3])) + 86400)
    created = created + 1
  end
end
return created
