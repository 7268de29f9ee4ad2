-- Which town a buffer belongs to, and where that town's daemon listens.
--
-- The socket path comes from `gastownctl sockname`, run once per town: the path rules
-- (GASTOWND_SOCKET, the private directory, the short fallback for long paths) live in one
-- place, the Python client, and the editors never copy them.
local config = require("gastownd.config")

local uv = vim.uv or vim.loop
local M = {}

local sockets = {} -- town root ("" for gastownctl's default) -> socket path
local waiting = {} -- town root -> callbacks waiting for the running `gastownctl sockname`

local function kind(path)
  local stat = uv.fs_stat(path)
  return stat and stat.type
end

-- The outermost ancestor of `dir` holding mayor/town.json, else the outermost holding a
-- mayor/ directory (as gt does), else nil.
function M.find_root(dir)
  local with_marker, with_mayor
  dir = vim.fn.fnamemodify(dir, ":p")
  dir = dir:gsub("(.)/+$", "%1")
  while true do
    local base = dir == "/" and "" or dir
    if kind(base .. "/mayor/town.json") == "file" then
      with_marker = dir
    elseif kind(base .. "/mayor") == "directory" then
      with_mayor = dir
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      break
    end
    dir = parent
  end
  return with_marker or with_mayor
end

-- The town of a buffer: the `town_root` option, else the town the plugin's own buffers were
-- opened for, else the town around the buffer's directory (the working directory for buffers
-- without a file). nil means gastownctl's default: GT_TOWN_ROOT, GT_ROOT, the editor's working
-- directory, ~/gt.
function M.root_for(buf)
  if config.options.town_root then
    return (vim.fn.fnamemodify(vim.fn.expand(config.options.town_root), ":p"):gsub("(.)/+$", "%1"))
  end
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  local ok, own = pcall(vim.api.nvim_buf_get_var, buf, "gastownd_town")
  if ok then
    return own ~= "" and own or nil
  end
  local name = vim.api.nvim_buf_get_name(buf)
  local dir
  if name ~= "" and not name:match("^%a[%w+.-]*://") then
    dir = vim.fn.fnamemodify(name, ":p:h")
  else
    dir = vim.fn.getcwd()
  end
  return M.find_root(dir)
end

-- Forget the socket paths found so far (setup() calls it: the command may have changed).
function M.reset()
  sockets = {}
end

local function close(handle)
  if handle and not handle:is_closing() then
    handle:close()
  end
end

-- callback(path, err) on the main loop; err is {code, message}.
function M.socket(root, callback)
  if config.options.socket then
    return callback(vim.fn.expand(config.options.socket))
  end
  local key = root or ""
  if sockets[key] then
    return callback(sockets[key])
  end
  if waiting[key] then
    table.insert(waiting[key], callback)
    return
  end
  waiting[key] = { callback }

  local command = config.options.gastownctl
  local args = {}
  for i = 2, #command do
    args[#args + 1] = command[i]
  end
  if root then
    vim.list_extend(args, { "--town-root", root })
  end
  args[#args + 1] = "sockname"
  local shown = table.concat(command, " ") .. " sockname"

  local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
  local out, err = {}, {}
  local timer = uv.new_timer()
  local handle, exit_code
  local open_streams = 3 -- stdout, stderr, the process itself
  local done = false

  local function finish(path, message)
    if done then
      return
    end
    done = true
    timer:stop()
    close(timer)
    close(stdout)
    close(stderr)
    close(handle)
    vim.schedule(function()
      local callbacks = waiting[key] or {}
      waiting[key] = nil
      if path then
        sockets[key] = path
      end
      for _, cb in ipairs(callbacks) do
        cb(path, message and { code = "gastownctl", message = message })
      end
    end)
  end

  local function settle()
    open_streams = open_streams - 1
    if open_streams > 0 then
      return
    end
    local text = table.concat(out)
    local path = text:match("^%s*(.-)%s*$")
    if exit_code == 0 and path ~= "" and not path:find("\n") then
      finish(path)
    else
      local first = (table.concat(err) .. text):match("^%s*([^\n]*)")
      finish(nil, string.format("`%s` failed (exit %s): %s", shown, tostring(exit_code), first))
    end
  end

  local spawn_error
  handle, spawn_error = uv.spawn(command[1], {
    args = args,
    stdio = { nil, stdout, stderr },
  }, function(code)
    exit_code = code
    settle()
  end)
  if not handle then
    local message = "cannot run `%s` (%s); set `gastownctl` in setup()"
    finish(nil, string.format(message, shown, spawn_error))
    return
  end
  local function reader(chunks)
    return function(_, data) -- an error ends the stream as EOF does
      if data then
        chunks[#chunks + 1] = data
      else
        settle()
      end
    end
  end
  stdout:read_start(reader(out))
  stderr:read_start(reader(err))
  timer:start(config.options.timeout_ms, 0, function()
    if handle and not handle:is_closing() then
      handle:kill("sigterm")
    end
    finish(nil, string.format("`%s` did not finish within %d ms", shown, config.options.timeout_ms))
  end)
end

return M
