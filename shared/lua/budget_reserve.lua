-- Check every bucket on a job's path and, only if all fit, debit them and record the reservation.
--
-- KEYS[1]     {gw}:budget:resv        hash: reservation id -> JSON {c = {bucket key -> charged}, x = expiry}
-- KEYS[2]     {gw}:budget:resv:exp    sorted set: reservation id scored by expiry
-- KEYS[3..]   {gw}:budget:<name>      the buckets (see budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     reservation id
-- ARGV[3]     ttl of the reservation, seconds
-- ARGV[4]     '1' when borrowable buckets may be borrowed from
-- ARGV[5..]   per bucket, five values: capacity, rate, cost, floor, borrowable ('1'/'0')
--
-- Returns {1, '', '0'} when admitted (or when this id already holds a live reservation: a repeated
-- admission is not charged twice), else {0, blocking bucket key, seconds until it would fit} with
-- 'inf' when it never can. A bucket fits when level - cost >= floor. A borrowable bucket, when
-- borrowing is allowed, is not checked but is still debited, down to -capacity at most.
local now = clock(ARGV[1])
local id, ttl, borrow = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'

local held = redis.call('HGET', KEYS[1], id)
if held then
  if tonumber(cjson.decode(held).x) > now then return {1, '', '0'} end
  redis.call('HDEL', KEYS[1], id)  -- expired unreported: its charge stays, a new one is made
  redis.call('ZREM', KEYS[2], id)
end

local n = #KEYS - 2
local levels, stamps, specs = {}, {}, {}
local worst_key, worst_wait = nil, -1
for i = 1, n do
  local key, a = KEYS[i + 2], 5 + (i - 1) * 5
  local s = {cap = tonumber(ARGV[a]), rate = tonumber(ARGV[a + 1]), cost = tonumber(ARGV[a + 2]),
             floor = tonumber(ARGV[a + 3]), lend = borrow and ARGV[a + 4] == '1'}
  specs[i] = s
  levels[i], stamps[i] = refill(key, s.cap, s.rate, now)
  if not s.lend and levels[i] - s.cost < s.floor then
    local wait
    if s.rate <= 0 or s.cost > s.cap - s.floor then
      wait = math.huge
    else
      wait = (s.cost + s.floor - levels[i]) / s.rate
    end
    if wait > worst_wait then worst_key, worst_wait = key, wait end
  end
end

if worst_key then
  if worst_wait == math.huge then return {0, worst_key, 'inf'} end
  return {0, worst_key, fmt(worst_wait)}
end

local charges = {}
for i = 1, n do
  local key, s = KEYS[i + 2], specs[i]
  save(key, clamp(levels[i] - s.cost, s.cap), stamps[i], s.cap, s.rate)
  charges[key] = fmt(s.cost)
end
local expires = now + ttl
redis.call('HSET', KEYS[1], id, cjson.encode({c = charges, x = fmt(expires)}))
redis.call('ZADD', KEYS[2], expires, id)

-- Sweep a few reservations that expired unreported, so the record never grows without bound.
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
for _, old in ipairs(stale) do
  redis.call('HDEL', KEYS[1], old)
  redis.call('ZREM', KEYS[2], old)
end
return {1, '', '0'}
