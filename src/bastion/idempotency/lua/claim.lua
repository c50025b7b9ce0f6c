-- Claim an idempotency record, take over one whose lease expired, or return what is there.
-- One round trip: a replay gets the stored response in this same reply.
--
-- KEYS[1]  the record (a hash: s state p|c, f fingerprint, o owner, l lease end in ms,
--          t the claiming request's trace id, st status, h headers, b body, k body kept 1|0)
-- ARGV     fingerprint, owner, lease_ms, ttl_ms, trace_id
-- Returns  {1, 0}                                          claimed
--          {1, 1, lost_trace_id}                            claimed, taking over an expired lease
--          {2, fingerprint, lease_remaining_ms}             another request holds it
--          {3, fingerprint, status, headers, body, kept}    completed
-- The clock is the server's (TIME): processes on different hosts agree on leases.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = string.format('%.0f', now + tonumber(ARGV[3]))
local rec = redis.call('HMGET', KEYS[1], 's', 'f', 'l', 'st', 'h', 'b', 'k', 't')
if rec[1] then
  if rec[1] == 'c' then
    return {3, rec[2], tonumber(rec[4]), rec[5], rec[6], tonumber(rec[7])}
  end
  local held_until = tonumber(rec[3])
  if held_until > now or rec[2] ~= ARGV[1] then
    return {2, rec[2], held_until - now}
  end
  redis.call('HSET', KEYS[1], 'o', ARGV[2], 'l', lease_until, 't', ARGV[5])
  return {1, 1, rec[8] or ''}
end
redis.call('HSET', KEYS[1], 's', 'p', 'f', ARGV[1], 'o', ARGV[2], 'l', lease_until, 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, 0}
