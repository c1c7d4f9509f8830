-- One atomic commit of one conversation's new state and entries.
-- KEYS: 1 lease, 2 conversation (hash: s = state, n = next seq), 3 log (stream, id = seq-0),
--       4 open sessions (set), 5 deadlines (sorted set), 6 owed to the bot (hash "seq:cid"),
--       7 inbound stream, 8 routed inputs stored (hash id -> seq), 9 the same by arrival (zset).
-- ARGV: 1 fencing token, 2 conversation id, 3 seq of the first entry (0: none),
--       4 next seq, 5 state (JSON), 6 "1" when a session is open, 7 the deadline: seconds
--       from the latest routed input's arrival (its stream id), else from now ("" none),
--       8 number of entries, then per entry: seq, entry (JSON), "1" when owed to the bot;
--       then the number of routed inputs stored, per input: its inbound stream id and the
--       seq it was answered ("" none); then how many input ids the partition remembers;
--       then "1" when the commit expires the open session.
-- Deadlines are the engine's time (TIME), from the input's arrival. An expiry is refused
-- (EARLY) before its stored deadline, and (WAITING) while the inbound stream holds an input
-- that arrived before it, undelivered or pending: that input may keep the session alive.
-- Refuses (error reply) when the lease is not this token's (FENCED), the seqs do not
-- follow what is stored (SEQ), or a routed input was already stored (DUPLICATE): a stale
-- writer can never append, and an input handed over again is never stored twice.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the partition lease is not held by ' .. ARGV[1])
end
local inputs_at = 9 + 3 * tonumber(ARGV[8])
local input_count = tonumber(ARGV[inputs_at])
for j = 1, input_count do
  local id = ARGV[inputs_at + 2 * j - 1]
  if redis.call('HEXISTS', KEYS[8], id) == 1 then
    return redis.error_reply('DUPLICATE the input ' .. id .. ' is already stored')
  end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[inputs_at + 2 * input_count + 2] == '1' then
  local due = redis.call('ZSCORE', KEYS[5], ARGV[2])
  if due then
    local due_ms = math.floor(tonumber(due) * 1000)
    if now_ms < due_ms then
      return redis.error_reply('EARLY the deadline is in ' .. (due_ms - now_ms) .. ' ms')
    end
    if redis.call('EXISTS', KEYS[7]) == 1 then
      local after = '-'
      for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[7])) do
        for k = 1, #group, 2 do
          if group[k] == 'name' and group[k + 1] == 'owners' then
            for m = 1, #group, 2 do
              if group[m] == 'last-delivered-id' then after = '(' .. group[m + 1] end
            end
          end
        end
      end
      local waiting = #redis.call('XRANGE', KEYS[7], after, tostring(due_ms), 'COUNT', 1) > 0
      if not waiting and after ~= '-' then
        waiting = #redis.call('XPENDING', KEYS[7], 'owners', '-', tostring(due_ms), 1) > 0
      end
      if waiting then
        return redis.error_reply('WAITING an input that arrived before the deadline is not served yet')
      end
    end
  end
end
local stored = tonumber(redis.call('HGET', KEYS[2], 'n') or '1')
local first = tonumber(ARGV[3])
local next_seq = tonumber(ARGV[4])
if first > 0 then
  if stored ~= first then
    return redis.error_reply('SEQ expected ' .. stored .. ', got ' .. first)
  end
elseif next_seq < stored then
  return redis.error_reply('SEQ stored ' .. stored .. ', got a state at ' .. next_seq)
end
redis.call('HSET', KEYS[2], 's', ARGV[5], 'n', ARGV[4])
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  redis.call('XADD', KEYS[3], ARGV[i] .. '-0', 'e', ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    redis.call('HSET', KEYS[6], ARGV[i] .. ':' .. ARGV[2], '')
  end
  i = i + 3
end
if tonumber(ARGV[8]) > 0 then
  -- The doorbell for nodes whose clients follow this conversation (transport/cluster/routing.py).
  redis.call('PUBLISH', 'sw:commits', ARGV[2] .. ' ' .. (next_seq - 1))
end
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[4], ARGV[2])
else
  redis.call('SREM', KEYS[4], ARGV[2])
end
if ARGV[7] ~= '' then
  local base_ms = now_ms
  for j = 1, input_count do
    local arrived = tonumber((string.gsub(ARGV[inputs_at + 2 * j - 1], '-.*', '')))
    if j == 1 or arrived > base_ms then base_ms = arrived end
  end
  redis.call('ZADD', KEYS[5], tostring(base_ms / 1000 + tonumber(ARGV[7])), ARGV[2])
else
  redis.call('ZREM', KEYS[5], ARGV[2])
end
-- The routed inputs: remembered (by arrival, the stream id's milliseconds) and
-- acknowledged with the commit, the newest ARGV[last] kept.
for j = 1, input_count do
  local id = ARGV[inputs_at + 2 * j - 1]
  redis.call('HSET', KEYS[8], id, ARGV[inputs_at + 2 * j])
  redis.call('ZADD', KEYS[9], tonumber((string.gsub(id, '-.*', ''))), id)
  redis.call('XACK', KEYS[7], 'owners', id)
end
if input_count > 0 then
  local excess = redis.call('ZCARD', KEYS[9]) - tonumber(ARGV[inputs_at + 2 * input_count + 1])
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[9], math.min(excess, 1000))
    for k = 1, #oldest, 2 do
      redis.call('HDEL', KEYS[8], oldest[k])
    end
  end
end
return 1
