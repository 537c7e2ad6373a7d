#!lua
-- Removes one room's members on a dead node from its presence and announces each departure by
-- member key (no name is needed, so nothing here is ever readable). One room per call: a sweep
-- never holds Redis for longer than one room takes, and repeating a call changes nothing.
-- KEYS[1] presence hash; KEYS[2] the room's channel
-- ARGV: the dead node's id, publish command (PUBLISH or SPUBLISH)
-- Returns how many members it removed.
local prefix = ARGV[1] .. '|'
local swept = 0
local all = redis.call('HKEYS', KEYS[1])
for _, member in ipairs(all) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], member)
    redis.call(ARGV[2], KEYS[2], '-' .. member)
    swept = swept + 1
  end
end
return swept
