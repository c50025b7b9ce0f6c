-- Decide every rate limit rule of one request atomically, on the Redis server's clock.
--
-- KEYS[i]    the state key of rule i (all keys share one hash tag, so this works on a cluster)
-- ARGV[1]    "d" to decide, "r" to release concurrency slots
-- ARGV[2]    the request id (names concurrency leases and sliding-log entries)
-- ARGV[3]    "" to read the clock with TIME; a number only in tests that replay a timeline
-- ARGV[4..]  per rule, 7 numbers: algorithm, limit, period, emission, tau, cost, shadow
--            (microseconds; algorithms: 0 gcra, 1 fixed window, 2 sliding window,
--            3 sliding log, 4 concurrency)
--
-- Returns {admitted, now, then per rule: allowed, remaining, reset, retry}.
-- Phase one computes every verdict from the stored state; phase two writes state
-- only if every enforced rule admits, so a request rejected by one rule consumes
-- nothing from the others. This mirrors bastion/ratelimit/algorithms.py.

local function idiv(a, b)
  -- Floor division exact for integers below 2^53 (a / b alone can round across an integer).
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
  elseif r >= b then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return -idiv(-a, b)
end

local function str(x)
  -- Lua turns numbers into strings with 14 significant digits; microsecond times need 16.
  return string.format('%.0f', x)
end

local function ttl(us)
  -- At least a second: a key past its time is worth no more than a missing one, so a
  -- longer life is harmless, and a very short one would only race the next request.
  local ms = ceil_div(us, 1000) + 1
  if ms < 1000 then ms = 1000 end
  return str(ms)
end

local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local op = ARGV[1]
local rid = ARGV[2]
local n = #KEYS

if op == 'r' then
  for i = 1, n do
    local base = 4 + (i - 1) * 7
    if tonumber(ARGV[base]) == 4 then
      local cost = tonumber(ARGV[base + 5])
      for j = 1, cost do
        redis.call('ZREM', KEYS[i], rid .. ':' .. j)
      end
    end
  end
  return 1
end

local out = {1, now}
local admitted = 1
local plans = {}

for i = 1, n do
  local base = 4 + (i - 1) * 7
  local alg = tonumber(ARGV[base])
  local limit = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local emission = tonumber(ARGV[base + 3])
  local tau = tonumber(ARGV[base + 4])
  local cost = tonumber(ARGV[base + 5])
  local shadow = tonumber(ARGV[base + 6])
  local key = KEYS[i]
  local allowed, remaining, reset, retry
  local plan = nil

  if alg == 0 then
    local tat = tonumber(redis.call('GET', key) or '0')
    local b = tat
    if b < now then b = now end
    local new_tat = b + cost * emission
    local allow_at = new_tat - tau
    if allow_at > now then
      allowed = 0
      remaining = idiv(now + tau - b, emission)
      if remaining < 0 then remaining = 0 end
      reset = b - now
      retry = allow_at - now
    else
      allowed = 1
      remaining = idiv(now + tau - new_tat, emission)
      reset = new_tat - now
      retry = 0
      plan = {0, new_tat, new_tat - now}
    end

  elseif alg == 1 then
    local start = idiv(now, period) * period
    local st = redis.call('HMGET', key, 's', 'c')
    local count = 0
    if tonumber(st[1]) == start then count = tonumber(st[2]) end
    reset = start + period - now
    if count + cost > limit then
      allowed = 0
      remaining = limit - count
      retry = reset
    else
      allowed = 1
      count = count + cost
      remaining = limit - count
      retry = 0
      plan = {1, start, count, reset}
    end

  elseif alg == 2 then
    local start = idiv(now, period) * period
    local st = redis.call('HMGET', key, 's', 'p', 'c')
    local prev, cur = 0, 0
    local s = tonumber(st[1])
    if s == start then
      prev = tonumber(st[2])
      cur = tonumber(st[3])
    elseif s == start - period then
      prev = tonumber(st[3])
    end
    local period_ms = idiv(period, 1000)
    local elapsed_ms = idiv(now - start, 1000)
    local weighted = prev * (period_ms - elapsed_ms)
    if weighted + (cur + cost) * period_ms > limit * period_ms then
      allowed = 0
      local spare = limit - cur - cost
      if spare >= 0 then
        retry = start + (period_ms - idiv(spare * period_ms, prev)) * 1000 - now
      else
        local wait_ms = period_ms - idiv((limit - cost) * period_ms, cur)
        if wait_ms < 0 then wait_ms = 0 end
        retry = start + period + wait_ms * 1000 - now
      end
      if retry < 1 then retry = 1 end
      remaining = limit - ceil_div(weighted + cur * period_ms, period_ms)
      if cur > 0 then reset = start + 2 * period - now else reset = start + period - now end
    else
      allowed = 1
      cur = cur + cost
      remaining = limit - ceil_div(weighted + cur * period_ms, period_ms)
      reset = start + 2 * period - now
      retry = 0
      plan = {2, start, prev, cur}
    end
    if remaining < 0 then remaining = 0 end

  elseif alg == 3 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', str(now - period))
    local count = redis.call('ZCARD', key)
    if count + cost > limit then
      allowed = 0
      remaining = limit - count
      local oldest = redis.call('ZRANGE', key, count + cost - limit - 1, count + cost - limit - 1, 'WITHSCORES')
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      retry = tonumber(oldest[2]) + period - now
      if retry < 1 then retry = 1 end
      reset = tonumber(newest[2]) + period - now
    else
      allowed = 1
      remaining = limit - count - cost
      reset = period
      retry = 0
      plan = {3}
    end

  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', str(now))
    local in_flight = redis.call('ZCARD', key)
    reset = 0
    if in_flight + cost > limit then
      allowed = 0
      remaining = limit - in_flight
      if remaining < 0 then remaining = 0 end
      retry = 1000000
    else
      allowed = 1
      remaining = limit - in_flight - cost
      retry = 0
      plan = {4}
    end
  end

  if allowed == 0 and shadow == 0 then admitted = 0 end
  plans[i] = plan
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end

out[1] = admitted
if admitted == 0 then
  return out
end

for i = 1, n do
  local plan = plans[i]
  if plan then
    local key = KEYS[i]
    local base = 4 + (i - 1) * 7
    local period = tonumber(ARGV[base + 2])
    local cost = tonumber(ARGV[base + 5])
    local kind = plan[1]
    if kind == 0 then
      redis.call('SET', key, str(plan[2]), 'PX', ttl(plan[3]))
    elseif kind == 1 then
      redis.call('HSET', key, 's', str(plan[2]), 'c', str(plan[3]))
      redis.call('PEXPIRE', key, ttl(plan[4]))
    elseif kind == 2 then
      redis.call('HSET', key, 's', str(plan[2]), 'p', str(plan[3]), 'c', str(plan[4]))
      redis.call('PEXPIRE', key, ttl(2 * period))
    elseif kind == 3 then
      for j = 1, cost do
        redis.call('ZADD', key, str(now), str(now) .. ':' .. rid .. ':' .. j)
      end
      redis.call('PEXPIRE', key, ttl(period))
    else
      for j = 1, cost do
        redis.call('ZADD', key, str(now + period), rid .. ':' .. j)
      end
      redis.call('PEXPIRE', key, ttl(period))
    end
  end
end

return out
