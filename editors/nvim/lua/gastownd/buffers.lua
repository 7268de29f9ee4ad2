-- The plugin's own buffers: found by name, made once, closed without surprises.
local M = {}

function M.find(name)
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_get_name(buf) == name then
      return buf
    end
  end
  return nil
end

-- Close the current window; in the last window, show the alternate buffer instead (`:close`
-- refuses to close the last window).
function M.close_window()
  if #vim.api.nvim_tabpage_list_wins(0) > 1 then
    vim.cmd("close")
  elseif vim.fn.bufnr("#") > 0 and vim.fn.buflisted(vim.fn.bufnr("#")) == 1 then
    vim.cmd("buffer #")
  else
    vim.cmd("enew")
  end
end

-- A scratch buffer named `name`, reused if it exists, for the town `root` (nil: the default).
function M.scratch(name, filetype, root)
  local buf = M.find(name)
  if buf and not vim.api.nvim_buf_is_loaded(buf) then
    vim.api.nvim_buf_delete(buf, { force = true })
    buf = nil
  end
  if not buf then
    buf = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(buf, name)
    vim.bo[buf].buftype = "nofile"
    vim.bo[buf].bufhidden = "hide"
    vim.bo[buf].swapfile = false
    vim.bo[buf].modifiable = false
    vim.bo[buf].filetype = filetype
    vim.keymap.set("n", "q", M.close_window, { buffer = buf, nowait = true, desc = "close" })
  end
  vim.api.nvim_buf_set_var(buf, "gastownd_town", root or "")
  return buf
end

-- Replace the lines of a buffer the user may not edit.
function M.set_lines(buf, lines)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
end

return M
