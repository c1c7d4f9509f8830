-- Take a partition's lease when nobody holds it.
-- KEYS[1] the lease, KEYS[2] the partition's epoch counter; ARGV[1] node id, ARGV[2] lease ms.
-- Returns {1, token} when taken (token = "node:epoch", the fencing token), {0, holder} when held.
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, holder}
end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token}
