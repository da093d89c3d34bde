"""Layer 1: the Lua scripts of the transport (each runs atomically on one slot).

Request streams are never trimmed: a request is refused when its queue is
full (``ENQUEUE``), and one already accepted (requeued, retried, moved to
another route) goes back in whatever the queue's length.
"""

_CLAIM_IDEMPOTENCY = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ('P' .. ARGV[3]) then
  redis.call('SET', KEYS[1], 'P' .. ARGV[3], 'PX', ARGV[1])
  return {0, false}
end
if string.sub(v, 1, 1) == 'P' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[1])
  end
  return {1, false}
end
return {2, string.sub(v, 2)}
"""

_COMPLETE_IDEMPOTENCY = """
redis.call('SET', KEYS[1], 'R' .. ARGV[1], 'EX', ARGV[2])
local w = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return w
"""

_RELEASE_IDEMPOTENCY = """
if redis.call('GET', KEYS[1]) ~= ('P' .. ARGV[1]) then
  return {}
end
local w = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
return w
"""

_REQUEUE = """
local ok = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ok == 1 then
  if ARGV[6] ~= '' then
    return redis.call('XADD', KEYS[1], '*', 'm', ARGV[3], 'n', ARGV[4], 't', ARGV[6])
  end
  return redis.call('XADD', KEYS[1], '*', 'm', ARGV[3], 'n', ARGV[4])
end
return false
"""


_RELEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, frame in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'm', frame)
  redis.call('ZREM', KEYS[2], frame)
end
return #due
"""

# KEYS: the rate-limit keys; ARGV: now (ms), then (period ms, limit) per key.
# GCRA: each key holds the next free time ("TAT"); a call is allowed while
# TAT - now <= period - period/limit (a burst of ``limit`` per ``period``).
# Returns 0 if every key allows the call (and then charges all of them), else
# the 1-based index of the first key that refuses it (nothing charged).
RATE_LIMIT = """
local now = tonumber(ARGV[1])
local tats = {}
for i, key in ipairs(KEYS) do
  local period = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  if tat - now > period - interval then
    return i
  end
  tats[i] = {tat + interval, period}
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', tats[i][1]), 'PX', math.ceil(tats[i][2]))
end
return 0
"""

# Move a pending entry from one route's stream to another's (same service, same slot).
REQUEUE_TO = """
local ok = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ok == 1 then
  return redis.call('XADD', KEYS[2], '*', 'm', ARGV[3], 'n', ARGV[4])
end
return false
"""


ENQUEUE = """
-- KEYS: request streams (one slot on a Redis Cluster); ARGV[1]: the queue
-- length limit (MAX_QUEUE_LENGTH); ARGV[i + 1]: the frame for KEYS[i].
-- Each frame is added unless its stream already holds the limit (answered
-- entries are deleted, so XLEN counts what is waiting or running). Never
-- trims. Returns, per key: the entry id, false (refused: queue full), or the
-- error of that key alone (e.g. WRONGTYPE).
local limit = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local n = redis.pcall('XLEN', KEYS[i])
  if type(n) == 'table' then
    out[i] = n
  elseif n >= limit then
    out[i] = false
  else
    out[i] = redis.pcall('XADD', KEYS[i], '*', 'm', ARGV[i + 1])
  end
end
return out
"""
