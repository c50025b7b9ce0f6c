-- Decide every rate limit rule of each request atomically, on the Redis server's clock.
--
-- One call carries the decisions of one or more requests (those that arrived while
-- the previous call was on the wire); each is decided on its own, in order, and the
-- whole script is atomic, so each request sees the state the previous one left.
--
-- ARGV[1]    the number of requests; then, per request:
--              op        "d" to decide, "r" to release concurrency slots, "g" to give back
--                        an admission whose request never ran (its rules that admitted it)
--              rid       the request id (names concurrency leases and sliding-log entries)
--              now       "" to read the clock with TIME; a number only in tests replaying a
--                        timeline, and for "g" the time of the decision given back
--              n         the number of rules
--              9n numbers, per rule: algorithm, limit, period, emission, tau, cost, shadow,
--              max_delay, queue_limit (microseconds; algorithms: 0 gcra, 1 fixed window,
--              2 sliding window, 3 sliding log, 4 concurrency; max_delay 0: never queue)
-- KEYS       the requests' rule keys in the same order (all share one hash tag, so
--            this works on a cluster)
--
-- Returns one reply per request: {admitted, now, then per rule: allowed, remaining,
-- reset, retry} for a decision (an admitted rule's retry is its wait for a queued
-- slot), 1 for a release or a give-back.
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

local PER_RULE = 9

local function give_back(K, A)
  -- Undo what the decision at time A[3] recorded for each rule, as if the request never came.
  local at = tonumber(A[3])
  local rid = A[2]
  for i = 1, #K do
    local base = 4 + (i - 1) * PER_RULE
    local alg = tonumber(A[base])
    local period = tonumber(A[base + 2])
    local emission = tonumber(A[base + 3])
    local cost = tonumber(A[base + 5])
    local key = K[i]
    if alg == 0 then
      local tat = redis.call('GET', key)
      if tat then
        -- The key's expiry covers the later arrival time it replaces.
        redis.call('SET', key, str(tonumber(tat) - cost * emission), 'XX', 'KEEPTTL')
      end
    elseif alg == 1 then
      local st = redis.call('HMGET', key, 's', 'c')
      if tonumber(st[1]) == idiv(at, period) * period then
        redis.call('HSET', key, 'c', str(tonumber(st[2]) - cost))
      end
    elseif alg == 2 then
      local start = idiv(at, period) * period
      local st = redis.call('HMGET', key, 's', 'p', 'c')
      local s = tonumber(st[1])
      if s == start then
        redis.call('HSET', key, 'c', str(tonumber(st[3]) - cost))
      elseif s == start + period then
        redis.call('HSET', key, 'p', str(tonumber(st[2]) - cost))
      end
    elseif alg == 3 then
      for j = 1, cost do
        redis.call('ZREM', key, str(at) .. ':' .. rid .. ':' .. j)
      end
    else
      for j = 1, cost do
        redis.call('ZREM', key, rid .. ':' .. j)
      end
    end
  end
  return 1
end

local function decide_one(K, A)
  if A[1] == 'g' then
    return give_back(K, A)
  end
  local now
  if A[3] == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  else
    now = tonumber(A[3])
  end
  local op = A[1]
  local rid = A[2]
  local n = #K

  if op == 'r' then
    for i = 1, n do
      local base = 4 + (i - 1) * PER_RULE
      if tonumber(A[base]) == 4 then
        local cost = tonumber(A[base + 5])
        for j = 1, cost do
          redis.call('ZREM', K[i], rid .. ':' .. j)
        end
      end
    end
    return 1
  end

  local out = {1, now}
  local admitted = 1
  local plans = {}

  for i = 1, n do
    local base = 4 + (i - 1) * PER_RULE
    local alg = tonumber(A[base])
    local limit = tonumber(A[base + 1])
    local period = tonumber(A[base + 2])
    local emission = tonumber(A[base + 3])
    local tau = tonumber(A[base + 4])
    local cost = tonumber(A[base + 5])
    local shadow = tonumber(A[base + 6])
    local max_delay = tonumber(A[base + 7])
    local queue = tonumber(A[base + 8])
    local key = K[i]
    local allowed, remaining, reset, retry
    local plan = nil

    if alg == 0 then
      local tat = tonumber(redis.call('GET', key) or '0')
      local b = tat
      if b < now then b = now end
      local new_tat = b + cost * emission
      local allow_at = new_tat - tau
      local delay = allow_at - now
      if delay > 0 and delay <= max_delay and delay <= queue * cost * emission then
        -- Queued: admitted for the slot delay away (the arrival time implies the queue).
        allowed = 1
        remaining = 0
        reset = new_tat - now
        retry = delay
        plan = {0, new_tat, new_tat - now}
      elseif allow_at > now then
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
      local key = K[i]
      local base = 4 + (i - 1) * PER_RULE
      local period = tonumber(A[base + 2])
      local cost = tonumber(A[base + 5])
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
end

local replies = {}
local ki, ai = 1, 2
for q = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[ai + 3])
  local K = {}
  for i = 1, n do
    K[i] = KEYS[ki + i - 1]
  end
  local A = {ARGV[ai], ARGV[ai + 1], ARGV[ai + 2]}
  for j = 1, PER_RULE * n do
    A[3 + j] = ARGV[ai + 3 + j]
  end
  replies[q] = decide_one(K, A)
  ki = ki + n
  ai = ai + 4 + PER_RULE * n
end
return replies
