-- Removes a member from a room's presence and announces the departure.
-- KEYS[1] presence hash; ARGV: channel, member
local name = redis.call('HGET', KEYS[1], ARGV[2])
if name then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[1], '-' .. name)
end
return 0
