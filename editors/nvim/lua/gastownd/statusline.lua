-- require("gastownd").statusline(): "gastownd: 2 open" or "gastownd: down", from a cache.
--
-- A call never waits: it returns the cached text and, when that is older than
-- `statusline_interval_ms`, starts one asynchronous refresh, which redraws the status lines.
local config = require("gastownd.config")
local conn = require("gastownd.conn")
local town = require("gastownd.town")

local uv = vim.uv or vim.loop
local M = {}

local OPEN_LIMIT = 1000
local cache = {} -- town root ("" for the default) -> { text, at, busy }

local function refresh(root, entry)
  entry.busy = true
  -- `local`: this daemon's own wisps, not the other nodes' of a federated town.
  local fields = { state = "open", limit = OPEN_LIMIT, ["local"] = true }
  conn.request(root, "sessions", fields, function(result, err)
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

-- The town of a buffer, looked up at most once per interval: the status line is drawn often.
local roots = {} -- buffer -> { root, at }

local function root_of(buf, now)
  local known = roots[buf]
  if known and now - known.at < config.options.statusline_interval_ms then
    return known.root
  end
  local root = town.root_for(buf)
  roots[buf] = { root = root, at = now }
  return root
end

function M.get()
  local now = uv.now()
  local ok, root = pcall(root_of, vim.api.nvim_get_current_buf(), now)
  if not ok then
    return ""
  end
  local key = root or ""
  local entry = cache[key]
  if not entry then
    entry = { text = "", at = nil, busy = false }
    cache[key] = entry
  end
  local stale = entry.at == nil or now - entry.at >= config.options.statusline_interval_ms
  if stale and not entry.busy then
    refresh(root, entry)
  end
  return entry.text
end

function M.reset()
  cache = {}
  roots = {}
end

return M
