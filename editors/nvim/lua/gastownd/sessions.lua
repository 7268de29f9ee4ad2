-- :GastownSessions, the sessions list in `gastownd://sessions`; <CR> opens a digest in
-- `gastownd://digest/<id>`, `s` runs `gastownctl seance <id>` in a terminal split.
local buffers = require("gastownd.buffers")
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local format = require("gastownd.format")
local town = require("gastownd.town")

local M = {}

M.NAME = "gastownd://sessions"
M.DIGEST_PREFIX = "gastownd://digest/"

local rows_of = {} -- buffer -> the rows shown, in order (line 2 is rows[1])

local function row_under_cursor(buf)
  local rows = rows_of[buf] or {}
  local row = rows[vim.api.nvim_win_get_cursor(0)[1] - 1]
  if not row then
    config.notify("no session on this line")
  end
  return row
end

function M.refresh(buf)
  local root = town.root_for(buf)
  -- The daemon lists every node's sessions of a federated town.
  local fields = { limit = config.options.sessions_limit }
  conn.request(root, "sessions", fields, function(result, err)
    if not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    if err then
      rows_of[buf] = {}
      buffers.set_lines(buf, { "-- " .. conn.describe("sessions", err) })
      config.notify(conn.describe("sessions", err))
      return
    end
    local rows = result.sessions or {}
    local lines = { format.session_header() }
    for _, row in ipairs(rows) do
      lines[#lines + 1] = format.session_row(row)
    end
    if #rows == 0 then
      lines[#lines + 1] = "-- no sessions yet"
    end
    rows_of[buf] = rows
    buffers.set_lines(buf, lines)
  end)
end

-- The digest of the session under the cursor (the wisp so far, for an open session).
function M.open_digest(buf)
  local row = row_under_cursor(buf)
  if not row then
    return
  end
  local root = town.root_for(buf)
  local id = row.session_id
  local open = row.state == "open"
  local op, fields = "digest", { ref = id }
  if open then
    op, fields = "wisp", { session = id }
  end
  conn.request(root, op, fields, function(result, err)
    if err then
      config.notify(conn.describe(op, err))
      return
    end
    local target = buffers.scratch(M.DIGEST_PREFIX .. id, "markdown", root)
    buffers.set_lines(target, open and format.wisp_lines(result) or format.digest_lines(result))
    vim.api.nvim_set_current_buf(target)
  end)
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

function M.open()
  local root = town.root_for(0)
  local buf = buffers.scratch(M.NAME, "gastownd-sessions", root)
  local function map(lhs, fn, desc)
    vim.keymap.set("n", lhs, function()
      fn(buf)
    end, { buffer = buf, nowait = true, desc = desc })
  end
  map("<CR>", M.open_digest, "open the session's digest")
  map("s", M.seance, "gastownctl seance in a terminal split")
  map("r", M.refresh, "refresh the sessions")
  vim.api.nvim_set_current_buf(buf)
  if vim.api.nvim_buf_line_count(buf) <= 1 then
    buffers.set_lines(buf, { "-- loading sessions…" })
  end
  M.refresh(buf)
  return buf
end

return M
