-- The plugin's highlight groups, linked to standard groups so that colour schemes apply; a
-- colour scheme or the user may set them (`default = true` keeps theirs).
local M = {}

M.NS = vim.api.nvim_create_namespace("gastownd")

M.LINKS = {
  GastowndTime = "Comment",
  GastowndType = "Type",
  GastowndActor = "Identifier",
  GastowndNode = "Special",
  GastowndId = "Constant",
  GastowndHeader = "Title",
  GastowndStatus = "WarningMsg",
  GastowndStateOpen = "DiffAdd",
  GastowndStateSquashed = "Statement",
  GastowndStateAbandoned = "ErrorMsg",
  GastowndStateLogged = "Comment",
}

function M.define()
  for group, target in pairs(M.LINKS) do
    vim.api.nvim_set_hl(0, group, { link = target, default = true })
  end
end

-- Highlight lines first..first+#highlights-1 of `buf` (0-based `first`): highlights[i] is a
-- list of { group, start byte, end byte } for line i. A `--` line is a status line.
function M.apply(buf, first, lines, highlights)
  for i, line in ipairs(lines) do
    local row = first + i - 1
    if line:sub(1, 3) == "-- " then
      vim.api.nvim_buf_add_highlight(buf, M.NS, "GastowndStatus", row, 0, -1)
    end
    for _, span in ipairs(highlights and highlights[i] or {}) do
      vim.api.nvim_buf_add_highlight(buf, M.NS, span[1], row, span[2], span[3])
    end
  end
end

return M
