#!lua
-- Records a member's sealed name in a room's presence and announces the join. The hash
-- expires unless the node's heartbeat renews it (see heartbeat.lua). The node files the hash
-- in its own set of presence hashes with a command of its own, queued before this one: on a
-- Redis Cluster that set lives in another slot, which one script may not touch.
-- KEYS[1] presence hash; KEYS[2] the room's channel
-- ARGV: member, sealed name, key TTL (ms), publish command (PUBLISH or SPUBLISH)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[4], KEYS[2], '+' .. ARGV[1] .. '\n' .. ARGV[2])
return 1
