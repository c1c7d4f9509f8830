-- The desk's owner takes requests it has read from the desk's inbound stream, to apply them.
-- KEYS[1] the desk lease, KEYS[2] the inbound stream; ARGV[1] token, ARGV[2..] stream ids.
-- Refuses (FENCED) unless the lease holds this token: a desk owner that paused past its
-- lease removes nothing, so the next owner reads every request it did not apply.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the desk lease is not held by ' .. ARGV[1])
end
if #ARGV > 1 then
  return redis.call('XDEL', KEYS[2], unpack(ARGV, 2))
end
return 0
