-- :GastownSessions, the sessions list in `gastownd://sessions`; <CR> opens a session in the
-- one digest buffer `gastownd://digest` (its digest, its wisp while open, or what the log knows
-- of a `logged` one), `s` runs `gastownctl seance <id>` in a terminal split.
local buffers = require("gastownd.buffers")
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local format = require("gastownd.format")
local town = require("gastownd.town")

local M = {}

M.NAME = "gastownd://sessions"
M.DIGEST = "gastownd://digest"
M.LOG_LIMIT = 500

-- buffer -> { rows = the rows shown (line 2 is rows[1]), state = nil or a state,
-- actor = nil or a substring, hide_logged = bool, watch = the push connection }
local views = {}
-- Session ids seen in the last answers to `sessions`, for completion.
local known_ids = {}

function M.view(buf)
  views[buf] = views[buf] or { rows = {}, hide_logged = false }
  return views[buf]
end

function M.known_ids()
  return known_ids
end

local function row_under_cursor(buf)
  local rows = M.view(buf).rows
  local row = rows[vim.api.nvim_win_get_cursor(0)[1] - 1]
  if not row then
    config.notify("no session on this line")
  end
  return row
end

-- The buffer's name says what it shows: gastownd://sessions?state=open&actor=nux&logged=hidden
local function view_name(view)
  local filters = {}
  if view.state then
    filters[#filters + 1] = "state=" .. view.state
  end
  if view.actor then
    filters[#filters + 1] = "actor=" .. view.actor
  end
  if view.hide_logged then
    filters[#filters + 1] = "logged=hidden"
  end
  if (view.order or 1) > 1 then
    filters[#filters + 1] = "order=" .. M.ORDERS[view.order][1]:gsub(" ", "_")
  end
  return #filters > 0 and (M.NAME .. "?" .. table.concat(filters, "&")) or M.NAME
end

local function visible(view, rows)
  local shown = {}
  for _, row in ipairs(rows) do
    if not (view.hide_logged and row.state == "logged") then
      shown[#shown + 1] = row
    end
  end
  return shown
end

-- The session under the cursor of each window showing `buf`, to put it back after a refresh.
local function cursors_by_session(buf, rows)
  local at = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    local row = rows[vim.api.nvim_win_get_cursor(win)[1] - 1]
    at[win] = row and row.session_id
  end
  return at
end

-- Show `rows` in `buf`; the cursor of every window stays on its session.
local function render(buf, view, rows, total)
  local cursors = cursors_by_session(buf, view.rows)
  local lines, highlights = format.session_table(rows)
  if #rows == 0 then
    lines[#lines + 1] = "-- no sessions" .. (total > 0 and " (logged ones hidden: L shows them)" or " yet")
  end
  view.rows = rows
  buffers.set_lines(buf, lines, highlights)
  buffers.rename(buf, view_name(view))
  for win, id in pairs(cursors) do
    for i, row in ipairs(rows) do
      if row.session_id == id and vim.api.nvim_win_is_valid(win) then
        vim.api.nvim_win_set_cursor(win, { i + 1, 0 })
        break
      end
    end
  end
end

-- What an open session has changed so far (its row says nothing yet): its wisp's steps, for
-- the first OPEN_CHANGES open rows, one request each; the list is drawn again as they come.
M.OPEN_CHANGES = 20

local function annotate_open(buf, view, root, rows, total)
  local asked = 0
  for _, row in ipairs(rows) do
    if row.state == "open" and asked < M.OPEN_CHANGES then
      asked = asked + 1
      conn.request(root, "wisp", { session = row.session_id }, function(wisp)
        if wisp and vim.api.nvim_buf_is_valid(buf) and view.rows == rows then
          row.changed = format.changes(wisp)
          render(buf, view, rows, total)
        end
      end)
    end
  end
end

function M.refresh(buf)
  local root = town.root_for(buf)
  local view = M.view(buf)
  -- The daemon lists every node's sessions of a federated town; `role` filters on a
  -- substring of the actor.
  local fields = { limit = config.options.sessions_limit, state = view.state, role = view.actor }
  conn.request(root, "sessions", fields, function(result, err)
    if not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    if err then
      view.rows = {}
      buffers.set_lines(buf, { "-- " .. conn.describe("sessions", err) })
      config.notify(conn.describe("sessions", err))
      return
    end
    local all = result.sessions or {}
    for _, row in ipairs(all) do
      known_ids[row.session_id] = true
    end
    local rows = M.ordered(view, visible(view, all))
    render(buf, view, rows, #all)
    annotate_open(buf, view, root, rows, #all)
  end)
end

local function digest_buffer(root, id)
  local buf = buffers.scratch(M.DIGEST, "markdown", root)
  vim.api.nvim_buf_set_var(buf, "gastownd_session", id)
  return buf
end

local function show_lines(root, id, lines, highlights, opts)
  local buf = digest_buffer(root, id)
  buffers.set_lines(buf, lines, highlights)
  buffers.map(buf, "r", function()
    M.show_session(root, id, opts)
  end, "refresh")
  buffers.map(buf, "<CR>", function()
    M.enter_issue()
  end, "who touched the issue id under the cursor")
  if opts.in_window and vim.api.nvim_win_is_valid(opts.in_window) then
    vim.api.nvim_win_set_buf(opts.in_window, buf)
  else
    buffers.show(buf)
  end
  return buf
end

-- What the log knows of a session with no wisp and no digest: its lines (query by id).
local function show_log(root, id, opts)
  -- `archive`: the lines of an old session may have been pruned from the live log.
  local fields = { session = id, limit = M.LOG_LIMIT, oldest_first = true, archive = true }
  conn.request(root, "query", fields, function(result, err)
    if err then
      config.notify(conn.describe("query", err))
      return
    end
    local row = opts.row or {}
    local lines = {
      "# Logged session " .. id,
      "",
      "known only from gt's lines in the log: no wisp, no digest",
      "",
    }
    local facts = {
      { "Actor", row.actor },
      { "First start", row.started_at },
      { "Last start", row.last_started_at },
      { "Starts", row.starts },
      { "Ended", row.ended_at },
      { "End", row.end_reason },
      { "Topic", row.topic },
    }
    for _, fact in ipairs(facts) do
      if fact[2] ~= nil and fact[2] ~= vim.NIL then
        lines[#lines + 1] = string.format("**%s**: %s", fact[1], tostring(fact[2]))
      end
    end
    local events = result.events or {}
    lines[#lines + 1] = ""
    lines[#lines + 1] = string.format("## %d line%s", #events, #events == 1 and "" or "s")
    lines[#lines + 1] = ""
    local highlights = {}
    for _, event in ipairs(events) do
      local line, spans = format.event_row(event)
      lines[#lines + 1] = line
      highlights[#lines] = spans
    end
    for i = 1, #lines do
      highlights[i] = highlights[i] or {}
    end
    show_lines(root, id, lines, highlights, opts)
  end)
end

-- Open session `id` in the digest buffer. opts.hint: its state if known ("open", "logged",
-- anything else: ended); opts.row: its sessions row. An ended session shows its digest, an
-- open one its wisp, and a session with neither what the log knows of it.
function M.show_session(root, id, opts)
  opts = opts or {}
  local function log()
    show_log(root, id, opts)
  end
  local function wisp(fallback)
    conn.request(root, "wisp", { session = id }, function(result, err)
      if err and err.code == "not_found" and fallback then
        return fallback()
      elseif err then
        return config.notify(conn.describe("wisp", err))
      end
      show_lines(root, id, format.wisp_lines(result), nil, opts)
    end)
  end
  local function digest(fallback)
    conn.request(root, "digest", { ref = id }, function(result, err)
      if err and err.code == "not_found" and fallback then
        return fallback()
      elseif err then
        return config.notify(conn.describe("digest", err))
      end
      show_lines(root, id, format.digest_lines(result), nil, opts)
    end)
  end
  if opts.hint == "logged" then
    log()
  elseif opts.hint == "open" then
    wisp(function()
      digest(log)
    end)
  else
    digest(function()
      wisp(log)
    end)
  end
end

-- <CR> on an issue id anywhere in the plugin's buffers: who touched it. Returns whether there
-- was one.
function M.enter_issue()
  local col = vim.api.nvim_win_get_cursor(0)[2]
  local issue = format.issue_at(vim.api.nvim_get_current_line(), col)
  if issue then
    require("gastownd.who").show(issue)
    return true
  end
  return false
end

-- The session under the cursor: its digest, its wisp so far, or what the log knows of it; on
-- an issue id (in its topic), who touched that issue.
function M.open_digest(buf)
  if M.enter_issue() then
    return
  end
  local row = row_under_cursor(buf)
  if not row then
    return
  end
  M.show_session(town.root_for(buf), row.session_id, { hint = row.state, row = row })
end

-- `gastownctl seance <id>` in a terminal split (it resumes the session with Claude Code).
function M.seance(buf)
  local row = row_under_cursor(buf)
  if not row then
    return
  end
  local root = town.root_for(buf)
  local command = vim.deepcopy(config.options.gastownctl)
  if root then
    vim.list_extend(command, { "--town-root", root })
  end
  vim.list_extend(command, { "seance", row.session_id })
  vim.cmd("botright new")
  if vim.fn.has("nvim-0.11") == 1 then
    vim.fn.jobstart(command, { term = true })
  else
    vim.fn.termopen(command)
  end
  vim.cmd("startinsert")
end

-- The full id of the session under the cursor, in the message area and the unnamed register.
function M.yank_id(buf)
  local row = row_under_cursor(buf)
  if row then
    vim.fn.setreg('"', row.session_id)
    vim.api.nvim_echo({ { row.session_id } }, false, {})
  end
end

-- Sort orders of the list (the daemon's is the last start, newest first).
M.ORDERS = {
  { "last start" },
  { "actor", function(row) return row.actor or "" end },
  { "state", function(row) return row.state or "" end },
  { "end", function(row)
    -- Newest end first; the open and logged ones without an end last.
    return row.ended_at and row.ended_at ~= vim.NIL and ("0" .. row.ended_at) or "1"
  end, true },
}

function M.ordered(view, rows)
  local order = M.ORDERS[view.order or 1]
  if not order[2] then
    return rows
  end
  local keyed = {}
  for i, row in ipairs(rows) do
    keyed[i] = { order[2](row), i, row }
  end
  table.sort(keyed, function(a, b)
    if a[1] ~= b[1] then
      if order[3] and a[1]:sub(1, 1) == "0" and b[1]:sub(1, 1) == "0" then
        return a[1] > b[1]
      end
      return a[1] < b[1]
    end
    return a[2] < b[2] -- stable: the daemon's order within a key
  end)
  local sorted = {}
  for i, item in ipairs(keyed) do
    sorted[i] = item[3]
  end
  return sorted
end

function M.cycle_order(buf)
  local view = M.view(buf)
  view.order = (view.order or 1) % #M.ORDERS + 1
  M.refresh(buf)
end

local STATE_CYCLE = { nil, "open", "squashed", "abandoned", "logged" }

function M.cycle_state(buf)
  local view = M.view(buf)
  local next_state = nil
  for i = 1, 5 do
    if STATE_CYCLE[i] == view.state then
      next_state = STATE_CYCLE[i % 5 + 1]
      break
    end
  end
  view.state = next_state
  M.refresh(buf)
end

function M.toggle_logged(buf)
  local view = M.view(buf)
  view.hide_logged = not view.hide_logged
  M.refresh(buf)
end

function M.filter_actor(buf, actor)
  local view = M.view(buf)
  view.actor = (actor ~= nil and actor ~= "") and actor or nil
  M.refresh(buf)
end

-- Refresh `buf` whenever a session starts or ends: a subscription of its own, to
-- session_start and session_end, kept while the buffer lives (reconnected when it drops).
local function watch(buf, root)
  local view = M.view(buf)
  if view.watch then
    return
  end
  local pending = false
  local function connect()
    if not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    town.socket(root, function(path, err)
      if err or not vim.api.nvim_buf_is_valid(buf) then
        return
      end
      local this
      this = conn.open(path, {
        on_frame = function(frame)
          if frame.push == "event" and not pending then
            pending = true
            vim.defer_fn(function()
              pending = false
              if vim.api.nvim_buf_is_valid(buf) then
                M.refresh(buf)
              end
            end, 100)
          end
        end,
        on_close = function()
          if view.watch == this then
            view.watch = nil
            vim.defer_fn(function()
              if vim.api.nvim_buf_is_valid(buf) and not view.watch then
                view.watch = true -- reserved while connecting
                connect()
              end
            end, 1000)
          end
        end,
      })
      view.watch = this
      this:send(conn.hello())
      this:send({ op = "subscribe", id = 1, types = { "session_start", "session_end" }, all_nodes = true })
    end)
  end
  view.watch = true -- reserved while connecting
  connect()
  vim.api.nvim_create_autocmd({ "BufWipeout", "BufDelete" }, {
    buffer = buf,
    once = true,
    callback = function()
      local w = views[buf] and views[buf].watch
      views[buf] = nil
      if type(w) == "table" then
        w:close()
      end
    end,
  })
end

function M.open()
  local root = town.root_for(0)
  -- The one sessions buffer, whatever filter its name shows.
  local buf = buffers.find(M.NAME) or buffers.find_prefix(M.NAME .. "?")
  buf = buf or buffers.scratch(M.NAME, "gastownd-sessions", root)
  vim.api.nvim_buf_set_var(buf, "gastownd_town", root or "")
  local function map(lhs, fn, desc)
    buffers.map(buf, lhs, function()
      fn(buf)
    end, desc)
  end
  map("<CR>", M.open_digest, "open the session: digest, wisp, or its lines in the log")
  map("s", M.seance, "gastownctl seance in a terminal split")
  map("r", M.refresh, "refresh")
  map("f", M.cycle_state, "filter by state: all, open, squashed, abandoned, logged")
  map("o", M.cycle_order, "order by: last start, actor, state, end")
  map("a", function(b)
    vim.ui.input({ prompt = "Actor (blank for all): ", default = M.view(b).actor or "" }, function(text)
      if text ~= nil then
        M.filter_actor(b, text)
      end
    end)
  end, "filter by actor (a substring)")
  map("L", M.toggle_logged, "hide or show the logged sessions")
  map("y", M.yank_id, "the full session id (yanked)")
  buffers.show(buf)
  if vim.api.nvim_buf_line_count(buf) <= 1 then
    buffers.set_lines(buf, { "-- loading sessions…" })
  end
  M.refresh(buf)
  watch(buf, root)
  return buf
end

-- Session ids for completion (those of the last `sessions` answers), starting with `lead`.
function M.complete_ids(lead)
  local found = {}
  for id, _ in pairs(known_ids) do
    if id:sub(1, #lead) == lead then
      found[#found + 1] = id
    end
  end
  table.sort(found)
  return found
end

-- Fill the completion cache in the background (a command line cannot wait for the daemon).
function M.prefetch(root)
  conn.request(root, "sessions", { limit = config.options.sessions_limit }, function(result)
    for _, row in ipairs(result and result.sessions or {}) do
      known_ids[row.session_id] = true
    end
  end)
end

return M
