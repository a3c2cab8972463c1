-- Shared prelude of the budget scripts; shared.lua.script puts it in front of every budget_* script.
--
-- A token bucket is a hash {tag}:budget:<name> with fields
--   level  tokens (or requests) available now, may be negative (debt), never above cap
--   ts     when level was last brought up to date (seconds, Redis clock unless a test passes one)
--   cap    capacity, rate  refill per second (written by every reserve / pull-down so that settle,
--          release and reads can refill without being told)
-- A window bucket (a dollar budget for one day or month) is a hash {tag}:spend:<name>:<window> with
--   spent    USD settled plus USD held by reservations in flight: what the limit is checked against
--   settled  USD settled only: what the alerts are about
--   cap      the limit (written by every reserve, so a changed budget counts at once)
--   ends     when the window ends (epoch seconds); meta  what it is, as JSON (for the alerts)
-- A window bucket is created only by budget_seed (from what the SQL store says was spent), never by
-- a reservation: a bucket Redis forgot is rebuilt, never taken as unspent.
-- Numbers are stored with 17 significant digits and returned as strings: Lua numbers turn into
-- integer replies, which would truncate fractions.

-- fmt(x) and clock(arg) come from shared/lua/common.lua, put in front of this file.

local function clamp(level, cap)
  if level > cap then return cap end
  if level < -cap then return -cap end
  return level
end

-- Level and stamp of a bucket refilled to `now`; a bucket never seen before starts full. A stamp in
-- the future (another clock) is kept, never moved back, so refill is never counted twice.
local function refilled(level, ts, cap, rate, now)
  level, ts = tonumber(level), tonumber(ts)
  if level == nil then return cap, now end
  if ts == nil then ts = now end
  if now > ts then
    level = level + (now - ts) * rate
    ts = now
  end
  return clamp(level, cap), ts
end

local function refill(key, cap, rate, now)
  local v = redis.call('HMGET', key, 'level', 'ts')
  return refilled(v[1], v[2], cap, rate, now)
end

-- Capacity and rate last written for a bucket, or nil when it was never used.
local function shape(key)
  local v = redis.call('HMGET', key, 'cap', 'rate')
  local cap, rate = tonumber(v[1]), tonumber(v[2])
  if cap == nil or rate == nil then return nil end
  return cap, rate
end

-- A deployment bucket's fields in one read: level, ts, hr, ir, ip, it (see the header).
local function deployment_fields(key)
  return redis.call('HMGET', key, 'level', 'ts', 'hr', 'ir', 'ip', 'it')
end

-- The interactive lane's meter decayed to `now`, from its fields: arrival rate (cost/s), largest recent cost.
local function decayed_meter(rate, peak, ts, now, tau)
  rate, peak, ts = tonumber(rate) or 0, tonumber(peak) or 0, tonumber(ts) or now
  if now > ts then
    local decay = math.exp(-(now - ts) / tau)
    rate, peak = rate * decay, peak * decay
  end
  return rate, peak
end

-- What other lanes must leave of a bucket (fields read as `v`) for the interactive lane: what it asked
-- for over the last `window` seconds at its recent rate, plus its largest recent job, at least `least`,
-- at most `most` (the configured reserve).
local function interactive_floor(v, now, tau, window, least, most)
  local rate, peak = decayed_meter(v[4], v[5], v[6], now, tau)
  return math.min(most, math.max(least, rate * window + peak))
end

local function save(key, level, ts, cap, rate)
  redis.call('HSET', key, 'level', fmt(level), 'ts', fmt(ts), 'cap', fmt(cap), 'rate', fmt(rate))
end

-- `save`, for an interactive reservation of `cost` on a deployment bucket whose fields were read as
-- `v`: also counted in its meter (rate += cost / tau, so a steady stream of r per second settles at r).
local function save_fed(key, level, ts, cap, rate, v, cost, now, tau)
  local r, peak = decayed_meter(v[4], v[5], v[6], now, tau)
  redis.call('HSET', key, 'level', fmt(level), 'ts', fmt(ts), 'cap', fmt(cap), 'rate', fmt(rate),
             'ir', fmt(r + cost / tau), 'ip', fmt(math.max(peak, cost)), 'it', fmt(now))
end


-- A window bucket's spent and settled USD (0 for fields never written).
local function window_spend(key)
  local v = redis.call('HMGET', key, 'spent', 'settled')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end

-- Give back what a reservation held on window buckets, without settling it: the call never reported
-- (its worker died) and recovery sends it again, or it was never sent. Its SQL record is what it is
-- billed, so a held dollar charge is never kept (unlike a token charge: the provider may have metered it).
local function refund_windows(record)
  if not record.w then return end
  for key, charged in pairs(record.w) do
    if redis.call('EXISTS', key) == 1 then
      local spent = window_spend(key)
      redis.call('HSET', key, 'spent', fmt(math.max(0, spent - tonumber(charged))))
    end
  end
end

-- Drop a reservation whose attempt never reported back (see refund_windows for its dollars).
local function drop_reservation(resv_key, exp_key, id, raw)
  redis.call('HDEL', resv_key, id)
  redis.call('ZREM', exp_key, id)
  if raw then refund_windows(cjson.decode(raw)) end
end
