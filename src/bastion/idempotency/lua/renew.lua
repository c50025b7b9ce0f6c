-- Extend the lease of a claim the caller still owns.
-- KEYS[1]  the record
-- ARGV     owner, lease_ms
-- Returns  1 extended, 0 not the caller's claim
local rec = redis.call('HMGET', KEYS[1], 's', 'o')
if rec[1] ~= 'p' or rec[2] ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'l', string.format('%.0f', now + tonumber(ARGV[2])))
return 1
