-- Give a lease up at once (a graceful stop). KEYS[1] the lease; ARGV[1] token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
