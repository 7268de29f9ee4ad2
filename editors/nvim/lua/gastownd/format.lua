-- Pure text: the rows of the feed, the sessions list, the digest and "who" windows.
local config = require("gastownd.config")

local M = {}

-- Days since 1970-01-01 of a civil date (proleptic Gregorian), so that UTC timestamps become
-- epoch seconds without os.time(), which reads its table as local time.
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Epoch seconds of an RFC 3339 timestamp ("2026-11-25T01:50:47Z"), or nil.
function M.epoch(ts)
  if type(ts) ~= "string" then
    return nil
  end
  local y, mo, d, h, mi, s = ts:match("^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)")
  if not y then
    return nil
  end
  local epoch = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600
    + tonumber(mi) * 60
    + tonumber(s)
  local sign, oh, om = ts:match("%d%d:%d%d:%d%d[%.%d]*([+-])(%d%d):?(%d%d)$")
  if sign then
    local offset = tonumber(oh) * 3600 + tonumber(om) * 60
    epoch = sign == "+" and epoch - offset or epoch + offset
  end
  return epoch
end

-- A timestamp in local time, with an os.date format; the text itself when it does not parse.
function M.local_time(ts, fmt)
  local epoch = M.epoch(ts)
  if not epoch then
    return tostring(ts or "?")
  end
  return os.date(fmt, epoch)
end

local function pad(text, width)
  text = tostring(text or "")
  local shown = vim.fn.strdisplaywidth(text)
  if shown >= width then
    return text
  end
  return text .. string.rep(" ", width - shown)
end

local function rtrim(text)
  return (text:gsub("%s+$", ""))
end

-- A value shortened for one row: strings as they are, the rest as JSON.
function M.short(value, limit)
  limit = limit or 60
  local text = type(value) == "string" and value or vim.json.encode(value)
  text = text:gsub("\r?\n", "⏎")
  if vim.fn.strchars(text) > limit then
    text = vim.fn.strcharpart(text, 0, limit - 1) .. "…"
  end
  return text
end

-- The payload as `key=value` pairs, keys sorted (as `gastownctl events` prints them).
function M.summary(payload)
  if type(payload) ~= "table" then
    return ""
  end
  local keys = vim.tbl_keys(payload)
  table.sort(keys)
  local parts = {}
  for _, key in ipairs(keys) do
    parts[#parts + 1] = key .. "=" .. M.short(payload[key])
  end
  return table.concat(parts, " ")
end

local function who(actor, node)
  actor = actor or ""
  if node and node ~= "" then
    return actor .. "@" .. node
  end
  return actor
end

-- `HH:MM:SS  type  actor  summary`; the node is shown (actor@node) when the event has one.
function M.event_line(event, node)
  return rtrim(table.concat({
    M.local_time(event.ts, config.options.time_format),
    pad(event.type or "?", 14),
    pad(who(event.actor, node or event.node), 24),
    M.summary(event.payload),
  }, "  "))
end

-- A line of the plugin's own in a feed: a reconnection, a resync.
function M.marker(text)
  return "-- " .. os.date(config.options.time_format) .. "  " .. text
end

local function session_columns(time, id, state, actor, ended, about)
  return rtrim(table.concat({
    pad(time, #os.date(config.options.date_format, 0)),
    pad(id, 8),
    pad(state, 9),
    pad(actor, 28),
    pad(ended, 17),
    about,
  }, "  "))
end

function M.session_header()
  return session_columns("Started", "Session", "State", "Actor", "End", "Topic")
end

-- One sessions row: time, short id, state, actor, end reason, topic (or summary). A session
-- that ran on another node shows it: actor@node.
function M.session_row(row)
  return session_columns(
    M.local_time(row.started_at, config.options.date_format),
    (row.session_id or "?"):sub(1, 8),
    row.state or "?",
    who(row.actor, row.remote and row.node),
    row.end_reason or "",
    M.short(row.topic or row.summary or "", 60)
  )
end

-- The lines of the "who" window: one per session that touched the issue.
function M.attribution_lines(issue, records)
  if #records == 0 then
    return { string.format("no session is recorded as touching %s", issue) }
  end
  local lines = { string.format("%s: %d change%s", issue, #records, #records == 1 and "" or "s") }
  for _, record in ipairs(records) do
    lines[#lines + 1] = rtrim(table.concat({
      pad(record.action or "?", 7),
      M.local_time(record.at, config.options.date_format),
      (record.session_id or "?"):sub(1, 8),
      who(record.actor, record.remote and record.node),
      record.digest_id and ("digest " .. record.digest_id) or "(session open)",
    }, "  "))
  end
  return lines
end

-- A digest as lines: its title, then its summary (markdown).
function M.digest_lines(digest)
  local lines = { "# " .. (digest.title or ("Digest: " .. (digest.session_id or "?"))), "" }
  local about = { "digest " .. (digest.digest_id or "?") }
  if digest.remote and digest.node then
    about[#about + 1] = "node " .. digest.node
  end
  lines[#lines + 1] = table.concat(about, ", ")
  lines[#lines + 1] = ""
  vim.list_extend(lines, vim.split(digest.summary or "", "\n", { plain = true }))
  while #lines > 0 and lines[#lines] == "" do
    table.remove(lines)
  end
  return lines
end

-- An open session has no digest yet: its wisp, with the steps so far.
function M.wisp_lines(wisp)
  local lines = {
    "# Open session " .. (wisp.session_id or "?"),
    "",
    "no digest yet: the session is still open (segment " .. tostring(wisp.segment or 1) .. ")",
    "",
    "**Actor**: " .. (wisp.actor or "?"),
    "**Topic**: " .. (wisp.topic or ""),
    "**Started**: " .. (wisp.started_at or "?"),
    "**Last activity**: " .. (wisp.last_activity_at or "?"),
    "**Steps**: " .. tostring(wisp.step_count or #(wisp.steps or {})),
    "",
  }
  for i, step in ipairs(wisp.steps or {}) do
    lines[#lines + 1] = string.format(
      "%d. **[%s]** %s %s",
      i,
      step.kind or "?",
      step.at or "",
      step.ref or M.summary(step.payload)
    )
  end
  return lines
end

-- The Beads id under byte column `col` (0-based) of `line`: gt-a1b2, spotter-dov.3, hq-cv-4k3kg.
function M.issue_at(line, col)
  local position = col + 1
  local start = 1
  while true do
    local s, e = line:find("[%w%.%-]+", start)
    if not s then
      return nil
    end
    if s <= position and position <= e then
      local word = line:sub(s, e):gsub("^[%.%-]+", ""):gsub("[%.%-]+$", "")
      if word:match("^%l[%l%d]*%-[%l%d][%l%d%.%-]*$") then
        return word
      end
      return nil
    end
    if s > position then
      return nil
    end
    start = e + 1
  end
end

return M
