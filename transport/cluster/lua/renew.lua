-- Extend a lease still held with this token. KEYS[1] the lease; ARGV[1] token, ARGV[2] lease ms.
-- Returns 1 when renewed, 0 when the lease was lost (expired, or taken by another node).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
