-- A room's members whose node is alive: member key, sealed name, member key, ...
-- KEYS[1] presence hash; KEYS[2] node heartbeats (sorted set: node -> expiry in ms)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local alive, members = {}, {}
for i = 1, #all, 2 do
  local node = string.match(all[i], '^(.*)|')
  if alive[node] == nil then
    local expiry = redis.call('ZSCORE', KEYS[2], node)
    alive[node] = expiry ~= false and tonumber(expiry) >= ms
  end
  if alive[node] then
    members[#members + 1] = all[i]
    members[#members + 1] = all[i + 1]
  end
end
return members
