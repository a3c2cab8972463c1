-- May a new attempt go to this deployment now? Closed: yes. Open: no, until open_s has passed.
-- Half-open: yes while probe slots remain, and the slot is taken in the same step.
--
-- KEYS[1..4]  the breaker of one deployment (see breaker_lib.lua)
-- ARGV[1]     now (seconds) or '' for the Redis clock
-- ARGV[2..9]  the configuration (see `config` in breaker_lib.lua)
--
-- Returns {allowed 1|0, state, probe ticket or '', seconds until worth asking again, transitions...}
-- where transitions are flat groups of four: from, to, at, reason.
local now = clock(ARGV[1])
local c = config(2)
local st = load(KEYS[1])
local moves = {}
tick(KEYS, st, now, c, moves)

local allowed, ticket, retry = 0, '', 0
if st.s == 'closed' then
  allowed = 1
elseif st.s == 'open' then
  retry = st.opened_at + c.open_s - now
elseif live_probes(KEYS[3], now, c, true) + st.ok < c.probes then
  st.seq, st.dirty = st.seq + 1, true
  ticket = tostring(st.seq)
  redis.call('ZADD', KEYS[3], now, ticket)
  allowed = 1
else
  retry = next_probe_slot(KEYS[3], now, c)
end
save(KEYS[1], st)

local out = {allowed, st.s, ticket, fmt(retry)}
for _, v in ipairs(moves) do out[#out + 1] = v end
return out
