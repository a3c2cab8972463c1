-- Fold one observation into an exponentially weighted moving average (calibration).
--
-- KEYS[1]     {gw}:calib:...          hash: value (the average), n (observations so far)
-- ARGV[1]     the observation
-- ARGV[2]     alpha, the weight of a new observation (0 < alpha <= 1)
--
-- The first observation is taken as it is. Returns the new average as a string.
local x, alpha = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'value', 'n')
local value, n = tonumber(v[1]), tonumber(v[2]) or 0
if value == nil then value = x else value = value + alpha * (x - value) end
redis.call('HSET', KEYS[1], 'value', fmt(value), 'n', n + 1)
return fmt(value)
