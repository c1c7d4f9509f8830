-- Forget one attachment; answers the bytes it took (0: there was none).
-- KEYS: the conversation's descriptions, the attachment's bytes, the conversation's byte count
-- ARGV: attachment id
local size = redis.call('STRLEN', KEYS[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and size == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('DECRBY', KEYS[3], size)
return size
