"""Layer 1: the Lua scripts of the transport (each runs atomically on one slot)."""

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
    return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[3], 'n', ARGV[4], 't', ARGV[6])
  end
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[3], 'n', ARGV[4])
end
return false
"""


_RELEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, frame in ipairs(due) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', frame)
  redis.call('ZREM', KEYS[2], frame)
end
return #due
"""
