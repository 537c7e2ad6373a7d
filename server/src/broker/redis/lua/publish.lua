-- Appends a sealed message body to a room's history and publishes it, atomically, so that
-- history and live delivery always agree. The id is `<epoch>-<seq>`: the epoch is the time
-- the history began (kept while the stream exists), and Redis counts seq up by one from 0.
-- The epoch is kept in a key of its own, so that a publish reads a short string instead of
-- the stream's newest entry (a whole message); the stream decides when they disagree.
-- KEYS[1] history stream; KEYS[2] its epoch
-- ARGV: channel, sealed body, sent at (ms), size, max age (ms)
local epoch = redis.call('GET', KEYS[2])
local id = false
if epoch then
  -- Fails if the stream is gone (NOMKSTREAM: nil) or began again under another epoch.
  local added = redis.pcall('XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[4], epoch .. '-*', 'b', ARGV[2], 't', ARGV[3])
  if type(added) == 'string' then
    id = added
  end
end
if not id then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] then
    epoch = string.match(last[1][1], '^(%d+)-')
  else
    local now = redis.call('TIME')
    epoch = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
  end
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], epoch .. '-*', 'b', ARGV[2], 't', ARGV[3])
end
redis.call('SET', KEYS[2], epoch, 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'm' .. id .. '\n' .. ARGV[2])
return id
