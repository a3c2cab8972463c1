-- Replace a reservation's charges with what was really used and refund (or charge) the difference.
--
-- KEYS[1]     {gw}:budget:resv        hash: reservation id -> JSON {c = {token bucket -> charged},
--                                     w = {window bucket -> charged USD}, x = expiry}
-- KEYS[2]     {gw}:budget:resv:exp    sorted set: reservation id scored by expiry
-- KEYS[3..]   the bucket keys named in ARGV (declared for Redis Cluster; the script also touches the
--             buckets the reservation recorded, which share the same hash tag and so the same slot)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     reservation id
-- ARGV[3]     what the attempt cost in USD: every window bucket the reservation held is charged this
-- ARGV[4..]   pairs: token bucket key, actual cost. A charged token bucket not named here is refunded in full.
--
-- Returns 0 when the reservation is unknown, already settled or expired (an expired one is dropped:
-- its token charges stay, its dollars are given back). Else {1, then per window bucket: key, settled
-- USD before, settled USD after, cap, meta} (for the alerts). The record is deleted first, so a
-- redelivered settle is a no-op.
local now = clock(ARGV[1])
local id = ARGV[2]
local raw = redis.call('HGET', KEYS[1], id)
if not raw then return 0 end

local record = cjson.decode(raw)
if tonumber(record.x) <= now then
  drop_reservation(KEYS[1], KEYS[2], id, raw)
  return 0
end
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)

local actual = {}
for i = 4, #ARGV, 2 do
  actual[ARGV[i]] = tonumber(ARGV[i + 1])
end

for key, charged in pairs(record.c) do
  local cap, rate = shape(key)
  if cap then
    local level, ts = refill(key, cap, rate, now)
    save(key, clamp(level + tonumber(charged) - (actual[key] or 0), cap), ts, cap, rate)
  end
end

local cost = tonumber(ARGV[3]) or 0
local out = {1}
for key, charged in pairs(record.w or {}) do
  if redis.call('EXISTS', key) == 1 then
    local spent, settled = window_spend(key)
    redis.call('HSET', key, 'spent', fmt(math.max(0, spent - tonumber(charged) + cost)),
               'settled', fmt(settled + cost))
    local v = redis.call('HMGET', key, 'cap', 'meta')
    out[#out + 1] = key
    out[#out + 1] = fmt(settled)
    out[#out + 1] = fmt(settled + cost)
    out[#out + 1] = v[1] or ''
    out[#out + 1] = v[2] or ''
  end
end
return out
