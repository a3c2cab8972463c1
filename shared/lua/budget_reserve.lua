-- Check every bucket on a job's path and, only if all fit, debit them and record the reservation.
--
-- KEYS[1]     {gw}:budget:resv        hash: reservation id -> JSON {c = {token bucket -> charged},
--                                     w = {window bucket -> charged USD}, x = expiry}
-- KEYS[2]     {gw}:budget:resv:exp    sorted set: reservation id scored by expiry
-- KEYS[3..]   the buckets: token buckets {gw}:budget:<name>, window buckets {gw}:spend:<name> (budget_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     reservation id
-- ARGV[3]     ttl of the reservation, seconds
-- ARGV[4]     '1' when borrowable buckets may be borrowed from
-- ARGV[5..7]  the interactive meter: its time constant (s), the seconds of its arrival rate an 'r' floor
--             keeps, and the least an 'r' floor keeps (share of the bucket's capacity)
-- ARGV[8..]   per bucket, seven values: capacity, rate, cost, floor, flags, window end, headroom
--             flags: 'b' borrowable (a soft limit), 'w' a window bucket (cost in USD, capacity the
--             limit, rate 0), 's' not enforced (a soft dollar budget: debited for its alerts only),
--             'a' adaptive (a deployment bucket: capacity, rate and floor were computed at the configured
--             headroom, the last value, and are scaled to the bucket's own, hr), 'i' an interactive
--             reservation (fed to the bucket's interactive meter), 'r' the floor is the interactive
--             reserve: the given floor is its most, and it keeps only what the interactive lane's
--             recent arrivals need (budget_lib.lua interactive_floor); 'i' and 'r' only with 'a';
--             window end: epoch seconds ('' for a token bucket); headroom: '' unless 'a'
--
-- Returns {1} when admitted (or when this id already holds a live reservation: a repeated admission
-- is not charged twice); {2, key, ...} naming the window buckets Redis does not hold (the caller
-- seeds them from the SQL store, budget_seed, and asks again); else {0, blocking bucket key, seconds
-- until it would fit ('inf' when it never can), spent, cap} (spent and cap for a window bucket, else
-- ''). A token bucket fits when level - cost >= floor; a borrowable one, when borrowing is allowed, is
-- not checked but still debited, down to -capacity at most. A window bucket fits when
-- spent + cost <= cap; when it does not, it fits again when the window ends.
local now = clock(ARGV[1])
local id, ttl, borrow = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local tau, window_s, least = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local STRIDE = 7
-- A provider's full bucket gains nothing until a request reaches it, while the mirror debited at
-- admission and refills from then on. The first debit from a full deployment bucket (a dump after a
-- quiet spell) starts its refill this much later: the time from admission to the provider, with room.
-- 0.5 s was not enough on a slow, loaded machine: a dump's first requests reached the provider up to
-- ~70 ms later than that, the mirror counted refill the provider never had, and the storm saw 1-3 429s.
local FULL_LAG_S = 1.0

local held = redis.call('HGET', KEYS[1], id)
if held then
  if tonumber(cjson.decode(held).x) > now then return {1} end
  drop_reservation(KEYS[1], KEYS[2], id, held)  -- expired unreported: a new one is made
end

local n = #KEYS - 2
local specs, unseeded = {}, {}
for i = 1, n do
  local a = 8 + (i - 1) * STRIDE
  local flags = ARGV[a + 4]
  local s = {key = KEYS[i + 2], cap = tonumber(ARGV[a]), rate = tonumber(ARGV[a + 1]),
             cost = tonumber(ARGV[a + 2]), floor = tonumber(ARGV[a + 3]),
             lend = borrow and string.find(flags, 'b', 1, true) ~= nil,
             window = string.find(flags, 'w', 1, true) ~= nil,
             enforced = string.find(flags, 's', 1, true) == nil, ends = tonumber(ARGV[a + 5]),
             interactive = string.find(flags, 'i', 1, true) ~= nil}
  -- Never: above the configured bucket less the most floor, as BudgetTree.too_large tells callers (a
  -- headroom backed off for a while makes a big job wait, not fail)
  s.never = s.cost > s.cap - s.floor
  if string.find(flags, 'a', 1, true) then  -- a deployment bucket: every field in one read
    s.fields = deployment_fields(s.key)
    local base = tonumber(ARGV[a + 6])
    local scale = (tonumber(s.fields[3]) or base) / base
    s.cap, s.rate, s.floor = s.cap * scale, s.rate * scale, s.floor * scale
  end
  if s.fields and string.find(flags, 'r', 1, true) then
    s.floor = interactive_floor(s.fields, now, tau, window_s, least * s.cap, s.floor)
  end
  specs[i] = s
  if s.window and redis.call('EXISTS', s.key) == 0 then
    unseeded[#unseeded + 1] = s.key
  end
end
if #unseeded > 0 then return {2, unpack(unseeded)} end

local worst, worst_wait = nil, -1
for i = 1, n do
  local s = specs[i]
  local wait = nil
  if s.window then
    s.spent = window_spend(s.key)
    if s.enforced and s.spent + s.cost > s.cap + 1e-12 then
      if s.cost > s.cap then wait = math.huge else wait = math.max(0, s.ends - now) end
    end
  else
    if s.fields then
      s.level, s.ts = refilled(s.fields[1], s.fields[2], s.cap, s.rate, now)
    else
      s.level, s.ts = refill(s.key, s.cap, s.rate, now)
    end
    -- A job bigger than a backed-off deployment bucket (never is checked at the configured one) goes
    -- when the bucket is full, into debt, rather than wait for a headroom that needs traffic to recover
    local need = math.min(s.cost + s.floor, s.cap)
    if not s.lend and (s.never or s.level < need) then
      if s.rate <= 0 or s.never then
        wait = math.huge
      else
        wait = (need - s.level) / s.rate
      end
    end
  end
  if wait and wait > worst_wait then worst, worst_wait = s, wait end
end

if worst then
  local shown = worst_wait == math.huge and 'inf' or fmt(worst_wait)
  if worst.window then return {0, worst.key, shown, fmt(worst.spent), fmt(worst.cap)} end
  return {0, worst.key, shown, '', ''}
end

local charges, windows = {}, {}
for i = 1, n do
  local s = specs[i]
  if s.window then
    redis.call('HSET', s.key, 'spent', fmt(s.spent + s.cost), 'cap', fmt(s.cap))
    windows[s.key] = fmt(s.cost)
  else
    if s.fields and s.level >= s.cap then s.ts = math.max(s.ts, now + FULL_LAG_S) end
    if s.interactive and s.fields then
      save_fed(s.key, clamp(s.level - s.cost, s.cap), s.ts, s.cap, s.rate, s.fields, s.cost, now, tau)
    else
      save(s.key, clamp(s.level - s.cost, s.cap), s.ts, s.cap, s.rate)
    end
    charges[s.key] = fmt(s.cost)
  end
end
local expires = now + ttl
redis.call('HSET', KEYS[1], id, cjson.encode({c = charges, w = windows, x = fmt(expires)}))
redis.call('ZADD', KEYS[2], expires, id)

-- Sweep a few reservations that expired unreported, so the record never grows without bound.
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
for _, old in ipairs(stale) do
  drop_reservation(KEYS[1], KEYS[2], old, redis.call('HGET', KEYS[1], old))
end
return {1}
