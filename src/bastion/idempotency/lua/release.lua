-- Drop a claim (its handler failed), only if the caller still owns it.
-- KEYS[1]  the record
-- ARGV     owner
-- Returns  1 dropped, 0 not the caller's claim
local rec = redis.call('HMGET', KEYS[1], 's', 'o')
if rec[1] ~= 'p' or rec[2] ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
