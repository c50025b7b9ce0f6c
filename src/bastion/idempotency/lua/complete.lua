-- Store a response, only if the caller still owns the claim (fencing by owner token).
-- KEYS[1]  the record
-- ARGV     owner, status, headers, body, body kept (1|0), ttl_ms
-- Returns  1 stored, 0 the claim was taken over or released (nothing changed)
local rec = redis.call('HMGET', KEYS[1], 's', 'o')
if rec[1] ~= 'p' or rec[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'c', 'st', ARGV[2], 'h', ARGV[3], 'b', ARGV[4], 'k', ARGV[5])
redis.call('HDEL', KEYS[1], 'o', 'l', 't')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
