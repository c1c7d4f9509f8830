-- Keep one attachment of a conversation, within its bounds (docs/cluster.md, "Attachments").
-- KEYS: the conversation's descriptions (hash id -> JSON), the attachment's bytes,
--       the conversation's byte count
-- ARGV: attachment id, description JSON, bytes, max count, max bytes
local count = redis.call('HLEN', KEYS[1])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if count >= tonumber(ARGV[4]) or used + string.len(ARGV[3]) > tonumber(ARGV[5]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[3], string.len(ARGV[3]))
return 1
