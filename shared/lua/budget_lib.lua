-- Shared prelude of the budget scripts; shared.lua.script puts it in front of every budget_* script.
--
-- A bucket is a hash {tag}:budget:<name> with fields
--   level  tokens (or requests) available now, may be negative (debt), never above cap
--   ts     when level was last brought up to date (seconds, Redis clock unless a test passes one)
--   cap    capacity, rate  refill per second (written by every reserve / pull-down so that settle,
--          release and reads can refill without being told)
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
local function refill(key, cap, rate, now)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap, now end
  if ts == nil then ts = now end
  if now > ts then
    level = level + (now - ts) * rate
    ts = now
  end
  return clamp(level, cap), ts
end

-- Capacity and rate last written for a bucket, or nil when it was never used.
local function shape(key)
  local v = redis.call('HMGET', key, 'cap', 'rate')
  local cap, rate = tonumber(v[1]), tonumber(v[2])
  if cap == nil or rate == nil then return nil end
  return cap, rate
end

local function save(key, level, ts, cap, rate)
  redis.call('HSET', key, 'level', fmt(level), 'ts', fmt(ts), 'cap', fmt(cap), 'rate', fmt(rate))
end

