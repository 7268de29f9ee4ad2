-- NDJSON over the daemon's Unix socket, asynchronous (vim.loop): the editor never waits.
--
-- libuv callbacks run in a "fast" context where the editor cannot be touched, so frames are
-- split there and handed to the main loop with vim.schedule, in the order they arrived.
local config = require("gastownd.config")
local town = require("gastownd.town")

local uv = vim.uv or vim.loop
local M = {}

M.PROTOCOL = 1
M.CLIENT = "gastownd.nvim"
-- A reply bigger than this is not a reply from gastownd (its own frames stop at 1 MiB for
-- requests; a query of the whole feed stays far below).
local MAX_PARTIAL = 64 * 1024 * 1024
local JSON_OPTS = { luanil = { object = true, array = true } }

-- Frames are read with JSON null as nil, which is what the plugin's own code wants; but a
-- payload is the user's data, shown as JSON: its nulls stay (vim.NIL), as the CLI shows them.
-- `raw` is the same frame decoded without luanil; its payloads are grafted onto `plain`.
local function graft_payloads(plain, raw)
  if type(plain) ~= "table" or type(raw) ~= "table" then
    return
  end
  for key, value in pairs(raw) do
    if key == "payload" then
      plain[key] = value ~= vim.NIL and value or nil
    elseif type(value) == "table" then
      graft_payloads(plain[key], value)
    end
  end
end

function M.decode(line)
  local ok, frame = pcall(vim.json.decode, line, JSON_OPTS)
  if not ok or type(frame) ~= "table" then
    return nil
  end
  if line:find('"payload"', 1, true) then
    local raw_ok, raw = pcall(vim.json.decode, line)
    if raw_ok then
      graft_payloads(frame, raw)
    end
  end
  return frame
end

local Conn = {}
Conn.__index = Conn

local function connect_error(err, path)
  local name = tostring(err):match("^(%u+)") or tostring(err)
  if name == "ENOENT" or name == "ECONNREFUSED" then
    return {
      code = "unavailable",
      message = string.format("the daemon is not running (nothing listens on %s)", path),
    }
  end
  return { code = "unavailable", message = string.format("cannot connect to %s: %s", path, err) }
end

-- handlers.on_frame(frame) and handlers.on_close(err) run on the main loop. on_close runs once,
-- unless the owner closed the connection itself.
function M.open(path, handlers)
  local self = setmetatable({
    path = path,
    pipe = uv.new_pipe(false),
    partial = "",
    connected = false,
    outbox = {},
    dead = false, -- the pipe is closed, for whatever reason
    dropped = false, -- the owner closed it: nothing more is delivered
    handlers = handlers,
  }, Conn)
  self.pipe:connect(path, function(err)
    if err then
      return self:_fail(connect_error(err, path))
    end
    self.connected = true
    for _, data in ipairs(self.outbox) do
      self.pipe:write(data)
    end
    self.outbox = {}
    self.pipe:read_start(function(read_error, chunk)
      if read_error then
        self:_fail({ code = "unavailable", message = "lost the daemon: " .. tostring(read_error) })
      elseif chunk == nil then
        self:_fail({ code = "unavailable", message = "the daemon closed the connection" })
      else
        self:_receive(chunk)
      end
    end)
  end)
  return self
end

function Conn:_receive(chunk)
  local data = self.partial .. chunk
  local lines = {}
  local start = 1
  while true do
    local newline = data:find("\n", start, true)
    if not newline then
      break
    end
    if newline > start then
      lines[#lines + 1] = data:sub(start, newline - 1)
    end
    start = newline + 1
  end
  self.partial = data:sub(start)
  if #self.partial > MAX_PARTIAL then
    return self:_fail({ code = "protocol", message = "the daemon sent an oversized frame" })
  end
  if #lines == 0 then
    return
  end
  vim.schedule(function()
    for _, line in ipairs(lines) do
      if self.dropped then
        return
      end
      local frame = M.decode(line)
      if frame then
        self.handlers.on_frame(frame)
      end
    end
  end)
end

function Conn:_fail(err)
  if self.dead then
    return
  end
  self.dead = true
  if not self.pipe:is_closing() then
    self.pipe:close()
  end
  vim.schedule(function()
    if not self.dropped then
      self.dropped = true
      self.handlers.on_close(err)
    end
  end)
end

function Conn:send(message)
  if self.dead then
    return
  end
  local data = vim.json.encode(message) .. "\n"
  if self.connected then
    self.pipe:write(data)
  else
    self.outbox[#self.outbox + 1] = data
  end
end

-- Close from the owner's side: no frame and no on_close are delivered afterwards.
function Conn:close()
  self.dropped = true
  self.dead = true
  if not self.pipe:is_closing() then
    self.pipe:close()
  end
end

function M.hello()
  return { op = "hello", id = 0, protocol = M.PROTOCOL, client = M.CLIENT }
end

-- A one-line description of a failed request, for the user.
function M.describe(op, err)
  err = err or {}
  local code, message = err.code or "error", err.message or "no message"
  if code == "unavailable" or code == "timeout" or code == "gastownctl" then
    return message
  end
  return string.format("%s failed (%s): %s", op, code, message)
end

-- One request on a connection of its own. callback(result, err) runs once, on the main loop,
-- within opts.timeout_ms (default: the `timeout_ms` option) whatever the daemon does.
function M.request(root, op, fields, callback, opts)
  opts = opts or {}
  local timeout_ms = opts.timeout_ms or config.options.timeout_ms
  local finished = false
  local connection
  local timer = uv.new_timer()

  local function finish(result, err)
    if finished then
      return
    end
    finished = true
    timer:stop()
    if not timer:is_closing() then
      timer:close()
    end
    if connection then
      connection:close()
    end
    callback(result, err)
  end

  timer:start(timeout_ms, 0, function()
    vim.schedule(function()
      finish(nil, {
        code = "timeout",
        message = string.format(
          "the daemon did not answer `%s` within %.1f s",
          op,
          timeout_ms / 1000
        ),
      })
    end)
  end)

  town.socket(root, function(path, err)
    if finished then
      return
    end
    if err then
      return finish(nil, err)
    end
    connection = M.open(path, {
      on_frame = function(frame)
        if frame.push then
          return
        end
        if frame.id == 1 and frame.ok then
          return finish(frame.result or {}, nil)
        end
        if frame.id == 1 or frame.ok == false then
          -- Ours refused, the hello refused, or a connection-level error (busy,
          -- forbidden), which answers whatever is pending.
          return finish(nil, frame.error)
        end
      end,
      on_close = function(close_error)
        finish(nil, close_error)
      end,
    })
    connection:send(M.hello())
    local message = vim.tbl_extend("force", fields or {}, { op = op, id = 1 })
    connection:send(message)
  end)
end

return M
