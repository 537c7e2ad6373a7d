#!lua
-- Appends sealed message bodies to their rooms' history streams and publishes each, in the
-- order given, so that history and live delivery always agree. Many messages share one call:
-- the call's own cost (finding the script, entering Lua) is what a publish paid most for.
-- A message's id is `<epoch>-<seq>`: the epoch is the time its history began (kept while the
-- stream exists), and Redis counts seq up by one from 0. The node passes the epoch it last
-- saw for the room, so a publish needs no read; the stream decides when the hint is wrong.
-- The `#!lua` line makes Redis Cluster refuse a key this script does not declare, instead of
-- letting a publish go to a channel that has no subscribers on this shard.
-- KEYS: for message i, KEYS[2i-1] its history stream and KEYS[2i] its channel
-- ARGV[1] history size (approximate MAXLEN), ARGV[2] max age (ms), ARGV[3] the publish
-- command (PUBLISH or SPUBLISH), then four per message i, from ARGV[3 + 4(i-1) + 1]:
-- sealed body, sent at (ms), epoch hint ('' for none), refresh the expiry ('1' or '')
-- Returns one entry per message: its id, or an error for that message alone.
local size, age, publish = ARGV[1], ARGV[2], ARGV[3]
local epochs = {}

local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

-- Appends and publishes one message; returns its id, or the error that stopped it. Errors
-- are caught with redis.pcall, command by command: a Lua pcall around the whole costs more
-- than the append and the publish together.
local function append(stream, channel, body, sent, hint, refresh)
  local epoch = epochs[stream] or (hint ~= '' and hint) or nil
  local id = false
  if epoch then
    -- Fails if the stream is gone (NOMKSTREAM: nil) or began again under a later epoch.
    local added = redis.pcall('XADD', stream, 'NOMKSTREAM', 'MAXLEN', '~', size, epoch .. '-*', 'b', body, 't', sent)
    if type(added) == 'string' then
      id = added
    end
  end
  if not id then
    local last = redis.pcall('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if failed(last) then
      return last
    elseif last[1] then
      epoch = string.match(last[1][1], '^(%d+)-')
    else
      local now = redis.call('TIME')
      epoch = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
    end
    id = redis.pcall('XADD', stream, 'MAXLEN', '~', size, epoch .. '-*', 'b', body, 't', sent)
    if failed(id) then
      return id
    end
    refresh = '1'
  end
  epochs[stream] = epoch
  if refresh == '1' then
    redis.pcall('PEXPIRE', stream, age)
  end
  -- A message Redis refuses to publish (an ACL, say) is taken out of history again.
  local published = redis.pcall(publish, channel, 'm' .. id .. '\n' .. body)
  if failed(published) then
    redis.pcall('XDEL', stream, id)
    return published
  end
  return id
end

local ids = {}
for i = 1, #KEYS / 2 do
  local at = 3 + 4 * (i - 1)
  ids[i] = append(KEYS[2 * i - 1], KEYS[2 * i], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4])
end
return ids
