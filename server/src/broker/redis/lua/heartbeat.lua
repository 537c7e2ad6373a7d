-- Refreshes this node's heartbeat, then sweeps nodes whose heartbeat expired: their members
-- are removed from every room's presence and their departure announced by member key (no
-- name is needed, so nothing here is ever readable). ZREM decides which node sweeps.
-- Every key a node writes expires unless refreshed (so that a `volatile-*` maxmemory policy
-- may evict any of them, and nothing outlives the nodes that use it): each beat renews the
-- heartbeats, this node's set of presence hashes, and the next batch of those hashes (an SSCAN
-- cursor carried from beat to beat), so all of them are renewed well within the TTL.
-- KEYS[1] node heartbeats (sorted set: node -> expiry in ms)
-- ARGV: key prefix, this node, timeout (ms; 0 retires the node), fresh ("1" when the node has
-- just started: members an earlier run of the same node id left behind are swept first),
-- key TTL (ms), refresh cursor, refresh batch
-- Returns {1 if this node was missing (it had been swept), members swept, next cursor}
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local function sweep(node)
  local swept = 0
  local rooms = ARGV[1] .. ':node:' .. node .. ':rooms'
  local prefix = node .. '|'
  for _, key in ipairs(redis.call('SMEMBERS', rooms)) do
    local channel = string.sub(key, 1, #key - #':presence')
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, #prefix) == prefix then
        redis.call('HDEL', key, all[i])
        redis.call('PUBLISH', channel, '-' .. all[i])
        swept = swept + 1
      end
    end
  end
  redis.call('DEL', rooms)
  return swept
end

local swept = 0
if ARGV[4] == '1' then
  swept = sweep(ARGV[2])
end
local expiry = ms + tonumber(ARGV[3])
if tonumber(ARGV[3]) == 0 then
  expiry = 0
end
local added = redis.call('ZADD', KEYS[1], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local cursor = '0'
if expiry ~= 0 then
  local own = ARGV[1] .. ':node:' .. ARGV[2] .. ':rooms'
  local scan = redis.call('SSCAN', own, ARGV[6], 'COUNT', ARGV[7])
  cursor = scan[1]
  for _, key in ipairs(scan[2]) do
    redis.call('PEXPIRE', key, ARGV[5])
  end
  redis.call('PEXPIRE', own, ARGV[5])
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, 16)) do
  if node ~= ARGV[2] and redis.call('ZREM', KEYS[1], node) == 1 then
    swept = swept + sweep(node)
  end
end
return {added, swept, cursor}
