-- Records a member's sealed name in a room's presence and announces the join.
-- Both keys expire unless the node's heartbeat renews them (see heartbeat.lua).
-- KEYS[1] presence hash; KEYS[2] the node's set of presence hashes
-- ARGV: channel, member, sealed name, key TTL (ms)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], '+' .. ARGV[2] .. '\n' .. ARGV[3])
return 1
