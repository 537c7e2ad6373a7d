-- Appends a sealed message body to a room's history and publishes it, atomically, so that
-- history and live delivery always agree. The id is `<epoch>-<seq>`: the epoch is the time
-- the history began (kept while the stream exists), and Redis counts seq up by one from 0.
-- KEYS[1] history stream; ARGV: channel, sealed body, sent at (ms), size, max age (ms)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local epoch
if last[1] then
  epoch = string.match(last[1][1], '^(%d+)-')
else
  local now = redis.call('TIME')
  epoch = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], epoch .. '-*', 'b', ARGV[2], 't', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'm' .. id .. '\n' .. ARGV[2])
return id
