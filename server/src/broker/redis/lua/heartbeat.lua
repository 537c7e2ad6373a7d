#!lua
-- Refreshes this node's heartbeat, and claims the sweep of nodes whose heartbeat expired:
-- the claiming node then removes their members room by room (presence_sweep.lua), each step
-- small and safe to repeat, instead of one script over every room that would stall Redis.
-- ZREM decides which node claims a dead node. A claim lasts ARGV[7] ms: a sweep whose
-- claimer died with it unfinished is claimed again by the next beat after that.
-- Every key a node writes expires unless refreshed (so that a `volatile-*` maxmemory policy
-- may evict any of them, and nothing outlives the nodes that use it): each beat renews the
-- heartbeats and this node's set of presence hashes, and returns the next batch of those
-- hashes (an SSCAN cursor carried from beat to beat) for the node to renew, so all of them are
-- renewed well within the TTL. The hashes live in the rooms' slots on a Redis Cluster, which
-- this script may not touch; every key it does touch is one of its KEYS.
-- KEYS[1] node heartbeats (sorted set: node -> expiry in ms); KEYS[2] sweeps under way
-- (sorted set: node -> end of its claim in ms); KEYS[3] this node's set of presence hashes
-- ARGV: this node, timeout (ms; 0 retires the node), fresh ("1" when the node has
-- just started: members an earlier run of the same node id left behind are claimed for a
-- sweep), key TTL (ms), refresh cursor, refresh batch, claim (ms)
-- Returns {1 if this node was missing (it had been swept), nodes to sweep now, next cursor,
-- presence hashes to renew}
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local claim = ms + tonumber(ARGV[7])
local claimed = {}

if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], claim, ARGV[1])
  table.insert(claimed, ARGV[1])
end
local expiry = ms + tonumber(ARGV[2])
if tonumber(ARGV[2]) == 0 then
  expiry = 0
end
local added = redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local cursor = '0'
local renew = {}
if expiry ~= 0 then
  local scan = redis.call('SSCAN', KEYS[3], ARGV[5], 'COUNT', ARGV[6])
  cursor = scan[1]
  renew = scan[2]
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
-- A node that retires sweeps nobody: it is about to stop.
if expiry ~= 0 then
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, 16)) do
    if node ~= ARGV[1] and redis.call('ZREM', KEYS[1], node) == 1 then
      redis.call('ZADD', KEYS[2], claim, node)
      table.insert(claimed, node)
    end
  end
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ms, 'LIMIT', 0, 16)) do
    redis.call('ZADD', KEYS[2], claim, node)
    table.insert(claimed, node)
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {added, claimed, cursor, renew}
