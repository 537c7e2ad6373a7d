#!lua
-- Removes a member from a room's presence and announces the departure by its key.
-- KEYS[1] presence hash; KEYS[2] the room's channel
-- ARGV: member, publish command (PUBLISH or SPUBLISH)
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call(ARGV[2], KEYS[2], '-' .. ARGV[1])
end
return 0
