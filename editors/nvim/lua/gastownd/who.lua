-- :GastownWho, the sessions that closed, created or updated an issue, in a floating window.
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local format = require("gastownd.format")
local highlight = require("gastownd.highlight")
local town = require("gastownd.town")

local M = {}

M.window = nil -- the open float, if any

function M.close()
  local window = M.window
  M.window = nil
  if window and vim.api.nvim_win_is_valid(window) then
    vim.api.nvim_win_close(window, true)
  end
end

-- A float under the cursor, focused: `q`, <Esc> and `?` close it, and so does leaving it.
-- opts.on_enter(line number): what <CR> does; opts.highlights: spans per line.
function M.float(lines, opts)
  opts = opts or {}
  M.close()
  highlight.define()
  local buf = vim.api.nvim_create_buf(false, true)
  lines = format.texts(lines)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  highlight.apply(buf, 0, lines, opts.highlights)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "gastownd-who"
  local width = 1
  for _, line in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(line))
  end
  width = math.min(width, math.max(vim.o.columns - 4, 1))
  local window = vim.api.nvim_open_win(buf, true, {
    relative = "cursor",
    row = 1,
    col = 0,
    width = width,
    height = math.min(#lines, math.max(vim.o.lines - 4, 1)),
    style = "minimal",
    border = "rounded",
  })
  M.window = window
  vim.wo[window].wrap = false
  for _, lhs in ipairs({ "q", "<Esc>", "?" }) do
    vim.keymap.set("n", lhs, M.close, { buffer = buf, nowait = true, desc = "close" })
  end
  if opts.on_enter then
    vim.keymap.set("n", "<CR>", function()
      local line = vim.api.nvim_win_get_cursor(0)[1]
      M.close()
      opts.on_enter(line)
    end, { buffer = buf, nowait = true, desc = "open the session's digest" })
  end
  vim.api.nvim_create_autocmd({ "WinLeave", "BufLeave" }, {
    buffer = buf,
    once = true,
    callback = function()
      if M.window == window then
        vim.schedule(M.close)
      end
    end,
  })
  return window
end

-- issue: an id, or nil/"" for the Beads id under the cursor.
function M.show(issue)
  if issue == nil or issue == "" then
    local col = vim.api.nvim_win_get_cursor(0)[2]
    issue = format.issue_at(vim.api.nvim_get_current_line(), col)
    if not issue then
      config.notify("no issue id under the cursor (like gt-a1b2); name one: :GastownWho gt-a1b2")
      return
    end
  end
  local root = town.root_for(0)
  conn.request(root, "attribution", { issue = issue }, function(result, err)
    if err then
      config.notify(conn.describe("attribution", err))
      return
    end
    local records = result.records or {}
    local lines, highlights = format.attribution_table(result.issue or issue, records)
    M.float(lines, {
      highlights = highlights,
      on_enter = function(line)
        local record = records[line - 1]
        if record then
          require("gastownd.sessions").show_session(root, record.session_id, {
            hint = record.digest_id and "ended" or "open",
          })
        end
      end,
    })
  end)
end

return M
