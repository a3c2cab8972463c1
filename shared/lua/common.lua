-- Helpers every prelude-using script shares (the budget and breaker scripts); shared.lua.script
-- puts this file first.

-- Numbers go back as strings with 17 significant digits: Lua numbers become integer replies,
-- which would truncate fractions.
local function fmt(x)
  return string.format('%.17g', x)
end

-- The clock: an explicit time from the caller (tests), else the Redis server's own, so that every
-- api, scheduler and worker process, on any host, measures time on the same clock.
local function clock(arg)
  local t = tonumber(arg)
  if t then return t end
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1000000
end

