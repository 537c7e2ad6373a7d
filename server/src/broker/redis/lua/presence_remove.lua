-- Removes a member from a room's presence and announces the departure by its key.
-- KEYS[1] presence hash; ARGV: channel, member
if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], '-' .. ARGV[2])
end
return 0
