-- The plugin's own buffers: found by name, made once, unlisted, closed without surprises,
-- coloured, and each with `?` for its keys.
local format = require("gastownd.format")
local highlight = require("gastownd.highlight")

local M = {}

function M.find(name)
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_get_name(buf) == name then
      return buf
    end
  end
  return nil
end

-- The first loaded buffer whose name starts with `prefix`.
function M.find_prefix(prefix)
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.api.nvim_buf_get_name(buf):sub(1, #prefix) == prefix then
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

-- The keys of a plugin buffer, for `?`: { lhs, description } in the order they were mapped.
local keys_of = {}

-- Map `lhs` in normal mode in `buf`, and list it for `?`.
function M.map(buf, lhs, fn, desc)
  vim.keymap.set("n", lhs, fn, { buffer = buf, nowait = true, silent = true, desc = desc })
  local keys = keys_of[buf] or {}
  keys_of[buf] = keys
  for _, key in ipairs(keys) do
    if key[1] == lhs then
      key[2] = desc
      return
    end
  end
  keys[#keys + 1] = { lhs, desc }
end

function M.keys(buf)
  return keys_of[buf] or {}
end

-- `?`: the buffer's keys in a float, which `q`, `?` or <Esc> close.
function M.help(buf)
  local lines = {}
  for _, key in ipairs(M.keys(buf)) do
    lines[#lines + 1] = string.format("%-6s %s", key[1], key[2])
  end
  return require("gastownd.who").float(lines, { title = "keys" })
end

-- A scratch buffer named `name`, reused if it exists, for the town `root` (nil: the default).
-- Unlisted, not wrapped (in every window that shows it), with `q` and `?`.
function M.scratch(name, filetype, root)
  local buf = M.find(name)
  if buf and not vim.api.nvim_buf_is_loaded(buf) then
    vim.api.nvim_buf_delete(buf, { force = true })
    buf = nil
  end
  if not buf then
    highlight.define()
    buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_name(buf, name)
    vim.bo[buf].buftype = "nofile"
    vim.bo[buf].bufhidden = "hide"
    vim.bo[buf].swapfile = false
    vim.bo[buf].modifiable = false
    vim.bo[buf].filetype = filetype
    keys_of[buf] = nil
    M.map(buf, "q", M.close_window, "close the window")
    M.map(buf, "?", function()
      M.help(buf)
    end, "these keys")
    vim.api.nvim_create_autocmd("BufWinEnter", {
      buffer = buf,
      callback = function()
        vim.wo.wrap = false
      end,
    })
    vim.api.nvim_create_autocmd("BufWipeout", {
      buffer = buf,
      once = true,
      callback = function()
        keys_of[buf] = nil
      end,
    })
  end
  vim.api.nvim_buf_set_var(buf, "gastownd_town", root or "")
  return buf
end

-- Rename `buf` (its name shows its filters). Neovim keeps the old name as an unlisted
-- alternate buffer, which is wiped: the plugin's names must stay unique.
function M.rename(buf, name)
  local old = vim.api.nvim_buf_get_name(buf)
  if old == name then
    return
  end
  vim.api.nvim_buf_set_name(buf, name)
  local stale = M.find(old)
  if stale and stale ~= buf and not vim.api.nvim_buf_is_loaded(stale) then
    pcall(vim.api.nvim_buf_delete, stale, { force = true })
  end
end

-- Show `buf` in the current window, not wrapped.
function M.show(buf)
  vim.api.nvim_set_current_buf(buf)
  vim.wo.wrap = false
end

-- Replace the lines of a buffer the user may not edit; highlights[i]: spans of line i.
function M.set_lines(buf, lines, highlights)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  lines = format.texts(lines) -- a log text's newline or NUL must not fail the whole view
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.api.nvim_buf_clear_namespace(buf, highlight.NS, 0, -1)
  highlight.apply(buf, 0, lines, highlights)
end

return M
