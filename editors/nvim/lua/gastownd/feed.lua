-- :GastownFeed, the live event feed in `gastownd://feed`.
--
-- It reads the last `feed_lines` events with `query`, then subscribes from the query's cursor,
-- and keeps the cursor of every event it shows. When the daemon goes away it says so once,
-- retries with a doubling delay, and resubscribes from the last cursor: the daemon sends what
-- was appended in between, so nothing is shown twice and nothing is missed. A reply with
-- `resync: true` means the daemon could not resume there (the log was replaced or pruned): the
-- feed says so and reads the latest events again instead of assuming continuity.
local buffers = require("gastownd.buffers")
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local format = require("gastownd.format")
local town = require("gastownd.town")

local uv = vim.uv or vim.loop
local M = {}

M.NAME = "gastownd://feed"
local QUERY_ID, SUBSCRIBE_ID = 1, 2

-- The running feed: { buf, root, types, all_nodes, cursor, fresh (the cursor is the head a
-- query just gave), conn, generation, delay, down, ever_up, retry_timer, reply_timer }.
-- One feed at a time, as there is one feed buffer.
local feed = nil

function M.state()
  return feed
end

local function stop_timer(timer)
  if timer then
    timer:stop()
    if not timer:is_closing() then
      timer:close()
    end
  end
end

local function append(lines)
  local buf = feed and feed.buf
  if not buf or not vim.api.nvim_buf_is_valid(buf) or #lines == 0 then
    return
  end
  local count = vim.api.nvim_buf_line_count(buf)
  local empty = count == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ""
  local following = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    if vim.api.nvim_win_get_cursor(win)[1] >= count then
      following[#following + 1] = win
    end
  end
  vim.bo[buf].modifiable = true
  if empty then
    vim.api.nvim_buf_set_lines(buf, 0, 1, false, lines)
  else
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, lines)
  end
  local excess = vim.api.nvim_buf_line_count(buf) - config.options.feed_lines
  if excess > 0 then
    vim.api.nvim_buf_set_lines(buf, 0, excess, false, {})
  end
  vim.bo[buf].modifiable = false
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(following) do
    vim.api.nvim_win_set_cursor(win, { last, 0 })
  end
end

local function disconnect(state)
  state.generation = state.generation + 1 -- frames of the old connection are ignored
  stop_timer(state.reply_timer)
  state.reply_timer = nil
  if state.conn then
    state.conn:close()
    state.conn = nil
  end
end

local connect

local function reason(err)
  if err.code == "end" then
    return "the daemon ended the stream (stopping?)"
  end
  return conn.describe("subscribe", err)
end

local function retry(state, delay)
  stop_timer(state.retry_timer)
  state.retry_timer = uv.new_timer()
  state.retry_timer:start(delay, 0, function()
    vim.schedule(function()
      if feed == state then
        connect(state)
      end
    end)
  end)
end

-- The connection is gone (or never came): say so once per outage, then retry with backoff.
local function lost(state, err)
  disconnect(state)
  err = err or {}
  if err.code == "overflow" then
    -- The daemon dropped us for falling behind; the last cursor shown loses nothing.
    append({ format.marker("fell behind the daemon; catching up from the last event shown") })
    return retry(state, 0)
  end
  if not state.down then
    state.down = true
    if state.ever_up then
      append({ format.marker(reason(err) .. "; reconnecting") })
      config.notify("the daemon went away; the feed will resume when it is back")
    else
      config.notify(reason(err) .. "; the feed will start when it is up")
    end
  end
  local delay = state.delay
  state.delay = math.min(state.delay * 2, config.options.reconnect_max_ms)
  retry(state, delay)
end

local function filters(state, message)
  if #state.types > 0 then
    message.types = state.types
  end
  if state.all_nodes then
    message.all_nodes = true
  end
  return message
end

local function expect_reply(state)
  stop_timer(state.reply_timer)
  state.reply_timer = uv.new_timer()
  local generation = state.generation
  state.reply_timer:start(config.options.timeout_ms, 0, function()
    vim.schedule(function()
      if feed == state and state.generation == generation then
        lost(state, { code = "timeout", message = "the daemon did not answer within the timeout" })
      end
    end)
  end)
end

local function subscribe(state)
  expect_reply(state)
  state.conn:send(filters(state, { op = "subscribe", id = SUBSCRIBE_ID, cursor = state.cursor }))
end

local function on_frame(state, frame)
  if frame.push == "event" then
    if type(frame.event) == "table" then
      if frame.cursor then
        state.cursor = frame.cursor
        state.fresh = false
      end
      append({ format.event_line(frame.event, frame.node) })
    end
  elseif frame.push == "overflow" or frame.push == "end" then
    lost(state, { code = frame.push, message = frame.message or ("subscription " .. frame.push) })
  elseif frame.ok == false then
    local err = frame.error or {}
    if frame.id == QUERY_ID or frame.id == SUBSCRIBE_ID or frame.id == 0 then
      if err.code == "shutting_down" then
        return lost(state, err)
      end
      -- The daemon refused the feed itself (a bad type name, say): retrying cannot help.
      append({ format.marker(conn.describe(frame.id == QUERY_ID and "query" or "subscribe", err)) })
      config.notify(conn.describe("feed", err), vim.log.levels.ERROR)
      M.stop()
    else
      lost(state, err) -- a connection-level error (busy, timeout): the daemon hangs up
    end
  elseif frame.id == QUERY_ID then
    local result = frame.result or {}
    local events = result.events or {}
    local lines = {}
    for i = #events, 1, -1 do
      lines[#lines + 1] = format.event_line(events[i])
    end
    append(lines)
    state.cursor = result.cursor
    state.fresh = true
    subscribe(state)
  elseif frame.id == SUBSCRIBE_ID then
    stop_timer(state.reply_timer)
    state.reply_timer = nil
    local result = frame.result or {}
    -- A resync on the head cursor the query just gave has nothing to re-read: reading
    -- again would only ask the same question (and loop).
    if result.resync and not state.fresh then
      append({
        format.marker(
          "resync: the daemon could not resume after the last event shown "
            .. "(the log was replaced or pruned); reading the latest events again"
        ),
      })
      state.cursor = nil
      disconnect(state)
      return connect(state)
    end
    if state.down and state.ever_up then
      append({ format.marker("reconnected") })
    end
    state.down = false
    state.ever_up = true
    state.delay = config.options.reconnect_min_ms
  end
end

connect = function(state)
  disconnect(state)
  local generation = state.generation
  local function current()
    return feed == state and state.generation == generation
  end
  town.socket(state.root, function(path, err)
    if not current() then
      return
    end
    if err then
      return lost(state, err)
    end
    state.conn = conn.open(path, {
      on_frame = function(frame)
        if current() then
          on_frame(state, frame)
        end
      end,
      on_close = function(close_error)
        if current() then
          lost(state, close_error)
        end
      end,
    })
    state.conn:send(conn.hello())
    if state.cursor then
      subscribe(state)
    else
      expect_reply(state)
      local query = { op = "query", id = QUERY_ID, limit = config.options.feed_lines }
      state.conn:send(filters(state, query))
    end
  end)
end

-- Stop the feed: close its connection and timers. The buffer stays as it is.
function M.stop()
  local state = feed
  if not state then
    return
  end
  feed = nil
  disconnect(state)
  stop_timer(state.retry_timer)
end

local function feed_buffer(root)
  local existing = buffers.find(M.NAME)
  local buf = buffers.scratch(M.NAME, "gastownd-feed", root)
  if buf ~= existing then
    vim.api.nvim_create_autocmd({ "BufDelete", "BufWipeout" }, {
      buffer = buf,
      once = true,
      callback = function()
        if feed and feed.buf == buf then
          M.stop()
        end
      end,
    })
  end
  return buf
end

-- opts: { types = {...}, all_nodes = bool }
function M.open(opts)
  opts = opts or {}
  local types = opts.types or {}
  local all_nodes = opts.all_nodes and true or false
  local root = town.root_for(0)
  local buf = feed_buffer(root)
  vim.api.nvim_set_current_buf(buf)

  local same = feed
    and feed.buf == buf
    and feed.root == root
    and feed.all_nodes == all_nodes
    and vim.deep_equal(feed.types, types)
  if same then
    return buf
  end
  M.stop()
  buffers.set_lines(buf, {})
  feed = {
    buf = buf,
    root = root,
    types = types,
    all_nodes = all_nodes,
    cursor = nil,
    generation = 0,
    delay = config.options.reconnect_min_ms,
    down = false,
    ever_up = false,
  }
  connect(feed)
  return buf
end

return M
