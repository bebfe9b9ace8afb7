"""The Redis queue's Lua scripts: every state change of a delivery is one of them.

Each script runs atomically in Redis, so a crash between its steps cannot lose or duplicate a
delivery. The comment above each one lists its KEYS and ARGV as
:mod:`hookgate.deliverer.queues.redis.queue` passes them; the key names come from
:mod:`hookgate.deliverer.queues.redis.keys`. All keys of one call share the gateway's hash tag,
so a script stays within one Redis Cluster slot.
"""

from __future__ import annotations

__all__ = ["BURY", "COMPLETE_ALL", "DELAY", "ENQUEUE", "HEALTH_CLAIM", "HEALTH_FAILURE",
           "HEALTH_SUCCESS", "LEASE", "MAX_ATTEMPTS_LOGGED", "PRELUDE", "RELEASE",
           "REPLAY"]

#: Attempts kept per event; replays of a flapping endpoint must not grow a list forever.
MAX_ATTEMPTS_LOGGED = 1000

PRELUDE = f"""
local function log_attempt(key, entry, retention)
  if entry ~= '' then
    redis.call('RPUSH', key, entry)
    redis.call('LTRIM', key, -{MAX_ATTEMPTS_LOGGED}, -1)
    redis.call('EXPIRE', key, retention)
  end
end
local function owned(stream, group, id, consumer)
  return #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0
end
local function take(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end
-- An ordered head finished: the next delivery of its sequence goes to the stream.
local function release_next(stream, busy, waiting, list, field)
  local nxt = redis.call('LPOP', list)
  if nxt then
    redis.call('DECR', waiting)
    local d = cjson.decode(nxt)
    redis.call('HSET', busy, field, d[1] .. '/' .. d[2])
    redis.call('XADD', stream, '*', 'e', d[1], 'p', d[2], 'a', tostring(d[3]), 'o', d[4])
  else
    redis.call('HDEL', busy, field)
  end
end
"""

# KEYS stream, event, order busy, order waiting[, idempotency], then one wait list per
# endpoint (the stream again for unordered ones); ARGV event id, now, idem value, idem ttl ms,
# retention, number of event field items, has idempotency (0/1), event fields..., then
# (endpoint, ordering key or '') per endpoint
ENQUEUE = """
local id = ARGV[1]
local idem = nil
if ARGV[7] == '1' then idem = KEYS[5] end
local lists = 4 + tonumber(ARGV[7])
if idem then
  local held = redis.call('GET', idem)
  if held then
    local gap = string.find(held, ' ', 1, true)
    if tonumber(string.sub(held, 1, gap - 1)) > tonumber(ARGV[2]) then
      return {0, string.sub(held, gap + 1)}
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, id} end
if idem then redis.call('SET', idem, ARGV[3], 'PX', ARGV[4]) end
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[2], unpack(ARGV, 8, 7 + n))
redis.call('EXPIRE', KEYS[2], ARGV[5])
local j = 0
for i = 8 + n, #ARGV, 2 do
  j = j + 1
  local endpoint, okey = ARGV[i], ARGV[i + 1]
  if okey == '' then
    redis.call('XADD', KEYS[1], '*', 'e', id, 'p', endpoint, 'a', '1')
  else
    local field = endpoint .. ' ' .. okey
    if redis.call('HEXISTS', KEYS[3], field) == 1 then
      redis.call('RPUSH', KEYS[lists + j], cjson.encode({id, endpoint, 1, okey}))
      redis.call('INCR', KEYS[4])
    else
      redis.call('HSET', KEYS[3], field, id .. '/' .. endpoint)
      redis.call('XADD', KEYS[1], '*', 'e', id, 'p', endpoint, 'a', '1', 'o', okey)
    end
  end
end
return {1, id}
"""

# Promote due retries, then lease new entries with their events: what one fetch needs, in one
# round trip. KEYS stream, delayed; ARGV group, consumer, count, now, max promoted, event key
# prefix, body bytes to send at most. Returns {next due score or false, {entry id, event id,
# endpoint, attempt, ordering key or false, event fields or false}...}; fields are false when
# the event was sent earlier in this reply, or when the byte budget is spent (the caller
# loads those itself). The event keys share the gateway's hash tag, so this stays within
# one Redis Cluster slot.
LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, ARGV[5])
for _, m in ipairs(due) do
  local d = cjson.decode(m)
  if d[4] then
    redis.call('XADD', KEYS[1], '*', 'e', d[1], 'p', d[2], 'a', tostring(d[3]), 'o', d[4])
  else
    redis.call('XADD', KEYS[1], '*', 'e', d[1], 'p', d[2], 'a', tostring(d[3]))
  end
  redis.call('ZREM', KEYS[2], m)
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local out = {nxt[2] or false}
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                        'STREAMS', KEYS[1], '>')
if read then
  local sent = {}
  local budget = tonumber(ARGV[7])
  for _, entry in ipairs(read[1][2]) do
    local f = {}
    local kv = entry[2]
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
    local fields = false
    if not sent[f['e']] and budget > 0 then
      sent[f['e']] = true
      fields = redis.call('HMGET', ARGV[6] .. f['e'], 't', 'b', 'at', 's', 'k', 'kh')
      budget = budget - string.len(fields[2] or '')
    end
    table.insert(out, {entry[1], f['e'], f['p'], f['a'], f['o'] or false, fields})
  end
end
return out
"""

# Completions made together, in one call. KEYS stream, order busy, order waiting, then per
# completion its attempts list and, if ordered, its wait list; ARGV group, consumer,
# retention, then per completion: entry id, attempt json, order busy field or ''.
# Returns how many of the leases were still held (the others only log their attempt).
COMPLETE_ALL = PRELUDE + """
local k = 4
local held = 0
for i = 4, #ARGV, 3 do
  log_attempt(KEYS[k], ARGV[i + 1], ARGV[3])
  k = k + 1
  local wait = nil
  if ARGV[i + 2] ~= '' then
    wait = KEYS[k]
    k = k + 1
  end
  if owned(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    take(KEYS[1], ARGV[1], ARGV[i])
    if wait then release_next(KEYS[1], KEYS[2], KEYS[3], wait, ARGV[i + 2]) end
    held = held + 1
  end
end
return held
"""

# KEYS stream, delayed, event, attempts; ARGV group, consumer, entry id, attempt json or '',
# retention, due, delayed member, event ttl
DELAY = PRELUDE + """
log_attempt(KEYS[4], ARGV[4], ARGV[5])
if not owned(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
take(KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[8], 'GT')
return 1
"""

# KEYS stream, attempts, event, dead letter, dead index, dead-by-endpoint index[, order busy,
# order waiting, wait list]; ARGV group, consumer, entry id, attempt json or '', retention,
# dead_at, delivery id, order busy field or '', dead letter field pairs...
BURY = PRELUDE + """
log_attempt(KEYS[2], ARGV[4], ARGV[5])
if not owned(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
take(KEYS[1], ARGV[1], ARGV[3])
if ARGV[8] ~= '' then release_next(KEYS[1], KEYS[7], KEYS[8], KEYS[9], ARGV[8]) end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 9))
local endpoints = redis.call('HGET', KEYS[3], 'n')
if endpoints then redis.call('HSET', KEYS[4], 'n', endpoints) end
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[7])
return 1
"""

# KEYS stream; ARGV group, consumer, then (entry id, event id, endpoint, attempt, ordering
# key or '') per delivery
RELEASE = PRELUDE + """
local count = 0
for i = 3, #ARGV, 5 do
  if owned(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    take(KEYS[1], ARGV[1], ARGV[i])
    if ARGV[i + 4] == '' then
      redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1], 'p', ARGV[i + 2], 'a', ARGV[i + 3])
    else
      redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1], 'p', ARGV[i + 2], 'a', ARGV[i + 3],
                 'o', ARGV[i + 4])
    end
    count = count + 1
  end
end
return count
"""

# KEYS stream, dead index, order busy, order waiting, then (dead letter, dead-by-endpoint,
# event, wait list of its ordering key or the stream) per delivery; ARGV retention, then the
# delivery ids. An ordered dead letter rejoins its sequence as ENQUEUE adds one: at the end.
REPLAY = """
local names = {'t', 'b', 'at', 's', 'k', 'n', 'kh'}
local count = 0
for i = 2, #ARGV do
  local j = 5 + (i - 2) * 4
  local letter, by_endpoint, event, list = KEYS[j], KEYS[j + 1], KEYS[j + 2], KEYS[j + 3]
  local f = redis.call('HMGET', letter, 'e', 'p', 't', 'b', 'at', 's', 'k', 'n', 'kh', 'o')
  if f[1] then
    if redis.call('EXISTS', event) == 0 then
      local restored = {}
      for x = 1, 7 do
        if f[x + 2] then
          table.insert(restored, names[x])
          table.insert(restored, f[x + 2])
        end
      end
      redis.call('HSET', event, unpack(restored))
      redis.call('EXPIRE', event, ARGV[1])
    else
      redis.call('EXPIRE', event, ARGV[1], 'GT')
    end
    local okey = f[10]
    if not okey then
      redis.call('XADD', KEYS[1], '*', 'e', f[1], 'p', f[2], 'a', '1')
    else
      local field = f[2] .. ' ' .. okey
      if redis.call('HEXISTS', KEYS[3], field) == 1 then
        redis.call('RPUSH', list, cjson.encode({f[1], f[2], 1, okey}))
        redis.call('INCR', KEYS[4])
      else
        redis.call('HSET', KEYS[3], field, f[1] .. '/' .. f[2])
        redis.call('XADD', KEYS[1], '*', 'e', f[1], 'p', f[2], 'a', '1', 'o', okey)
      end
    end
    redis.call('DEL', letter)
    redis.call('ZREM', by_endpoint, ARGV[i])
    count = count + 1
  end
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return count
"""


# Endpoint health: a field "<failures> <failing since> <opened at or ''>" per failing endpoint.

# KEYS health, trial claim; ARGV endpoint, at, open after (0: never), reopen (0/1), now.
# Counts one more failure, opens the circuit when it is due (see Queue.record_failure) and
# returns the field after.
HEALTH_FAILURE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local failures, since, opened = 1, ARGV[2], ''
if raw then
  local f, s, o = string.match(raw, '^(%d+) (%S+) (%S*)$')
  failures = tonumber(f) + 1
  if tonumber(s) < tonumber(ARGV[2]) then since = s end
  opened = o
end
local open_after = tonumber(ARGV[3])
if opened == '' and open_after > 0 and failures >= open_after then
  opened = ARGV[5]
elseif opened ~= '' and ARGV[4] == '1' then
  opened = ARGV[5]
  redis.call('DEL', KEYS[2])
end
local value = failures .. ' ' .. since .. ' ' .. opened
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
"""

# KEYS health, trial claim; ARGV endpoint.
HEALTH_SUCCESS = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
"""

# KEYS health, trial claim; ARGV endpoint, claim ttl ms. 1 if claimed: a failure is on
# record and no other claim holds.
HEALTH_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
