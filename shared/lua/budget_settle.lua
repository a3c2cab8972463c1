-- Replace a reservation's charges with what was really used and refund (or charge) the difference.
--
-- KEYS[1]     {gw}:budget:resv        hash: reservation id -> JSON {c = {bucket key -> charged}, x = expiry}
-- KEYS[2]     {gw}:budget:resv:exp    sorted set: reservation id scored by expiry
-- KEYS[3..]   the bucket keys named in ARGV (declared for Redis Cluster; the script also touches the
--             buckets the reservation recorded, which share the same hash tag and so the same slot)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2]     reservation id
-- ARGV[3..]   pairs: bucket key, actual cost. A charged bucket not named here is refunded in full.
--
-- Returns 1 when settled, 0 when the reservation is unknown, already settled or expired (an expired
-- one is dropped without refund). The record is deleted first, so a redelivered settle is a no-op.
local now = clock(ARGV[1])
local id = ARGV[2]
local raw = redis.call('HGET', KEYS[1], id)
if not raw then return 0 end
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)

local record = cjson.decode(raw)
if tonumber(record.x) <= now then return 0 end

local actual = {}
for i = 3, #ARGV, 2 do
  actual[ARGV[i]] = tonumber(ARGV[i + 1])
end

for key, charged in pairs(record.c) do
  local cap, rate = shape(key)
  if cap then
    local level, ts = refill(key, cap, rate, now)
    save(key, clamp(level + tonumber(charged) - (actual[key] or 0), cap), ts, cap, rate)
  end
end
return 1
