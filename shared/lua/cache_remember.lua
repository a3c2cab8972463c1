-- Add one record to a semantic scope, keeping its newest max entries.
--
-- KEYS[1]  {gw}:cache:sem:<tenant>/<feature>/<scope>:entries   list of packed records, oldest first
-- KEYS[2]  {gw}:cache:sem:<tenant>/<feature>/<scope>:meta      hash: epoch (set once), seq (records ever added)
-- ARGV[1]  the record (JSON: vector, text, digest, job, expiry)
-- ARGV[2]  the most records the scope keeps
-- ARGV[3]  the scope's TTL, in ms (refreshed by every record)
-- ARGV[4]  an epoch for a scope that has none yet: a purged (or forgotten) scope starts a new one, so
--          every process's copy of it (shared/cache/semantic.py) is rebuilt rather than extended
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
