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
local highlight = require("gastownd.highlight")
local town = require("gastownd.town")
local types_of = require("gastownd.types")

local uv = vim.uv or vim.loop
local M = {}

M.NAME = "gastownd://feed"
local QUERY_ID, SUBSCRIBE_ID, STATUS_ID = 1, 2, 3
M.WAITING = "-- waiting for the daemon…"
M.EMPTY = "-- no events yet: new ones appear here"

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

-- Append lines (each { text, highlights, event }) to the feed; windows at its end follow it.
-- state.events[i] is the event of line i (false for the feed's own lines), for <CR>.
local function append(items)
  local buf = feed and feed.buf
  if not buf or not vim.api.nvim_buf_is_valid(buf) or #items == 0 then
    return
  end
  local count = vim.api.nvim_buf_line_count(buf)
  local following = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    if vim.api.nvim_win_get_cursor(win)[1] >= count then
      following[#following + 1] = win
    end
  end
  local lines, highlights = {}, {}
  for i, item in ipairs(items) do
    lines[i], highlights[i] = format.text(item[1]), item[2]
  end
  vim.bo[buf].modifiable = true
  local first
  if feed.placeholder then
    -- The "waiting" line goes once there is something to show.
    feed.placeholder = false
    feed.events = {}
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    first = 0
  else
    first = vim.api.nvim_buf_line_count(buf)
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, lines)
  end
  for _, item in ipairs(items) do
    feed.events[#feed.events + 1] = item[3] or false
  end
  highlight.apply(buf, first, lines, highlights)
  local excess = vim.api.nvim_buf_line_count(buf) - config.options.feed_lines
  if excess > 0 then
    vim.api.nvim_buf_set_lines(buf, 0, excess, false, {})
    for _ = 1, excess do
      table.remove(feed.events, 1)
    end
  end
  vim.bo[buf].modifiable = false
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(following) do
    vim.api.nvim_win_set_cursor(win, { last, 0 })
  end
end

local function say(text)
  append({ { format.marker(text), nil, false } })
end

local function event_item(state, event, node)
  types_of.saw(event.type)
  local line, highlights = format.event_row(event, node, state.local_node)
  return { line, highlights, event }
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
    say("fell behind the daemon; catching up from the last event shown")
    return retry(state, 0)
  end
  if not state.down then
    state.down = true
    if state.ever_up then
      say(reason(err) .. "; reconnecting")
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

-- Read the latest events (then subscribe from their cursor), or resume from the cursor.
local function send_read(state)
  if state.cursor then
    subscribe(state)
  else
    expect_reply(state)
    local query = { op = "query", id = QUERY_ID, limit = config.options.feed_lines }
    state.conn:send(filters(state, query))
  end
end

local function on_frame(state, frame)
  if frame.push == "event" then
    if type(frame.event) == "table" then
      if frame.cursor then
        state.cursor = frame.cursor
        state.fresh = false
      end
      append({ event_item(state, frame.event, frame.node) })
    end
  elseif frame.push == "overflow" or frame.push == "end" then
    lost(state, { code = frame.push, message = frame.message or ("subscription " .. frame.push) })
  elseif frame.ok == false then
    local err = frame.error or {}
    if frame.id == QUERY_ID or frame.id == SUBSCRIBE_ID or frame.id == 0 or frame.id == STATUS_ID then
      if err.code == "shutting_down" then
        return lost(state, err)
      end
      -- The daemon refused the feed itself (a bad type name, say): retrying cannot help.
      say(conn.describe(frame.id == QUERY_ID and "query" or "subscribe", err))
      config.notify(conn.describe("feed", err), vim.log.levels.ERROR)
      M.stop()
    else
      lost(state, err) -- a connection-level error (busy, timeout): the daemon hangs up
    end
  elseif frame.id == STATUS_ID then
    -- This daemon's node: its own events need no @node (a town without federation has one
    -- node, and every line would say so).
    local federation = (frame.result or {}).federation or {}
    state.local_node = federation.node or state.local_node
    state.local_node_known = true
    send_read(state)
  elseif frame.id == QUERY_ID then
    local result = frame.result or {}
    local events = result.events or {}
    local items = {}
    for i = #events, 1, -1 do
      items[#items + 1] = event_item(state, events[i])
    end
    if #items == 0 and state.placeholder then
      buffers.set_lines(state.buf, { M.EMPTY })
    end
    append(items)
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
      say(
        "resync: the daemon could not resume after the last event shown "
          .. "(the log was replaced or pruned); reading the latest events again"
      )
      state.cursor = nil
      disconnect(state)
      return connect(state)
    end
    if state.down and state.ever_up then
      say("reconnected")
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
    if state.all_nodes and not state.local_node_known then
      -- Events come tagged with their node: learn which one is this daemon's first.
      expect_reply(state)
      state.conn:send({ op = "status", id = STATUS_ID })
    else
      send_read(state)
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

-- The feed's name says its filter: gastownd://feed, gastownd://feed?types=sling,done&all_nodes
function M.name(types, all_nodes)
  local filters = {}
  if #types > 0 then
    filters[#filters + 1] = "types=" .. table.concat(types, ",")
  end
  if all_nodes then
    filters[#filters + 1] = "all_nodes"
  end
  return #filters > 0 and (M.NAME .. "?" .. table.concat(filters, "&")) or M.NAME
end

local function event_under_cursor(buf)
  local line = vim.api.nvim_win_get_cursor(0)[1]
  return feed and feed.buf == buf and feed.events[line] or nil
end

-- <CR>: on an issue id, who touched it; on a line of a session, that session.
function M.enter(buf)
  local col = vim.api.nvim_win_get_cursor(0)[2]
  local issue = format.issue_at(vim.api.nvim_get_current_line(), col)
  if issue then
    return require("gastownd.who").show(issue)
  end
  local event = event_under_cursor(buf)
  local payload = event and type(event.payload) == "table" and event.payload or {}
  local id = payload.session_id
  if type(id) == "string" and id ~= "" then
    local hint = event.type == "session_end" and "ended" or nil
    return require("gastownd.sessions").show_session(town.root_for(buf), id, { hint = hint })
  end
  config.notify("no session or issue id on this line")
end

local function feed_buffer(root)
  local buf = feed and feed.buf
  if not (buf and vim.api.nvim_buf_is_valid(buf)) then
    -- A stopped feed's buffer, whatever filter its name shows.
    buf = buffers.find(M.NAME) or buffers.find_prefix(M.NAME .. "?")
  end
  if not buf then
    buf = buffers.scratch(M.NAME, "gastownd-feed", root)
    vim.api.nvim_create_autocmd({ "BufDelete", "BufWipeout" }, {
      buffer = buf,
      once = true,
      callback = function()
        if feed and feed.buf == buf then
          M.stop()
        end
      end,
    })
    buffers.map(buf, "<CR>", function()
      M.enter(buf)
    end, "open the line's session, or who touched the issue under the cursor")
    buffers.map(buf, "r", function()
      M.reread(buf)
    end, "read the latest events again")
  end
  vim.api.nvim_buf_set_var(buf, "gastownd_town", root or "")
  return buf
end

-- opts: { types = {...}, all_nodes = bool }
function M.open(opts)
  opts = opts or {}
  local types = opts.types or {}
  local all_nodes = opts.all_nodes and true or false
  local root = town.root_for(0)
  local buf = feed_buffer(root)
  buffers.show(buf)

  local same = feed
    and feed.buf == buf
    and feed.root == root
    and feed.all_nodes == all_nodes
    and vim.deep_equal(feed.types, types)
  if same then
    return buf
  end
  M.stop()
  buffers.rename(buf, M.name(types, all_nodes))
  buffers.set_lines(buf, { M.WAITING })
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
    placeholder = true,
    events = { false },
  }
  connect(feed)
  return buf
end

-- Start again from the latest events, with the same filter.
function M.reread(buf)
  local state = feed
  if not state or state.buf ~= buf then
    return
  end
  M.stop()
  vim.api.nvim_buf_call(buf, function()
    M.open({ types = state.types, all_nodes = state.all_nodes })
  end)
end

return M
