-- :GastownWho, the sessions that closed, created or updated an issue, in a floating window.
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local format = require("gastownd.format")
local town = require("gastownd.town")

local M = {}

M.window = nil -- the open float, if any

function M.close()
  if M.window and vim.api.nvim_win_is_valid(M.window) then
    vim.api.nvim_win_close(M.window, true)
  end
  M.window = nil
end

-- A float under the cursor of the current window; it closes when the cursor moves on.
function M.float(lines)
  M.close()
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "gastownd-who"
  local width = 1
  for _, line in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(line))
  end
  width = math.min(width, math.max(vim.o.columns - 4, 1))
  M.window = vim.api.nvim_open_win(buf, false, {
    relative = "cursor",
    row = 1,
    col = 0,
    width = width,
    height = math.min(#lines, math.max(vim.o.lines - 4, 1)),
    style = "minimal",
    border = "rounded",
  })
  vim.keymap.set("n", "q", M.close, { buffer = buf, nowait = true, desc = "close" })
  local origin = vim.api.nvim_get_current_buf()
  vim.api.nvim_create_autocmd({ "CursorMoved", "CursorMovedI", "InsertEnter", "BufLeave" }, {
    buffer = origin,
    once = true,
    callback = function()
      M.close()
    end,
  })
  return M.window
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
  conn.request(town.root_for(0), "attribution", { issue = issue }, function(result, err)
    if err then
      config.notify(conn.describe("attribution", err))
      return
    end
    M.float(format.attribution_lines(result.issue or issue, result.records or {}))
  end)
end

return M
