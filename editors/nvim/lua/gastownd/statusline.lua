-- require("gastownd").statusline(): "gastownd: 2 open" or "gastownd: down", from a cache.
--
-- A call never waits: it returns the cached text and, when that is older than
-- `statusline_interval_ms`, starts one asynchronous refresh, which redraws the status lines.
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local town = require("gastownd.town")

local uv = vim.loop
local M = {}

local OPEN_LIMIT = 1000
local cache = {} -- town root ("" for the default) -> { text, at, busy }

local function refresh(root, entry)
  entry.busy = true
  conn.request(root, "sessions", { state = "open", limit = OPEN_LIMIT }, function(result, err)
    entry.busy = false
    entry.at = uv.now()
    local text
    if not err then
      local open = #(result.sessions or {})
      text = string.format("gastownd: %d%s open", open, open >= OPEN_LIMIT and "+" or "")
    elseif err.code == "unavailable" then
      text = "gastownd: down"
    elseif err.code == "timeout" then
      text = "gastownd: no answer"
    else
      text = "gastownd: ?"
    end
    if text ~= entry.text then
      entry.text = text
      vim.cmd("redrawstatus!")
    end
  end)
end

function M.get()
  local ok, root = pcall(town.root_for, 0)
  if not ok then
    return ""
  end
  local key = root or ""
  local entry = cache[key]
  if not entry then
    entry = { text = "", at = nil, busy = false }
    cache[key] = entry
  end
  if not entry.busy and (entry.at == nil or uv.now() - entry.at >= config.options.statusline_interval_ms) then
    refresh(root, entry)
  end
  return entry.text
end

function M.reset()
  cache = {}
end

return M
