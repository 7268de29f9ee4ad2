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

local function escape(code)
  return string.format("\\u%04x", code)
end

-- Text from the log (any writer's) made fit for one buffer line: a newline is shown as ⏎, and
-- every other control character (a NUL, which vim.fn refuses; ESC; CR; DEL; the C1 ones) and
-- the bidi controls (which reorder what is shown) as its escape `\u001b`, as gastownctl
-- prints them. What it returns holds none of them: applying it again changes nothing.
function M.text(value)
  local text = tostring(value or ""):gsub("\r?\n", "⏎")
  text = text:gsub("[%z\1-\31\127]", function(c)
    return escape(c:byte())
  end)
  text = text:gsub("\194([\128-\159])", function(c)
    return escape(c:byte())
  end)
  text = text:gsub("\226\128([\142\143\170-\174])", function(c)
    return escape(0x2000 + c:byte() - 0x80)
  end)
  text = text:gsub("\226\129([\166-\169])", function(c)
    return escape(0x2040 + c:byte() - 0x80)
  end)
  return (text:gsub("\216\156", escape(0x061c)))
end

-- Every line of `lines` through M.text: what any buffer of the plugin is given.
function M.texts(lines)
  local shown = {}
  for i, line in ipairs(lines) do
    shown[i] = M.text(line)
  end
  return shown
end

local function pad(text, width)
  text = tostring(text or "")
  local shown = vim.fn.strdisplaywidth(text)
  if shown >= width then
    return text
  end
  return text .. string.rep(" ", width - shown)
end
M.pad = pad

local function rtrim(text)
  return (text:gsub("%s+$", ""))
end

-- A line made of cells { text, width = n, group = "Gastownd…" }, joined by two spaces, the
-- last one unpadded: the text, and its highlights as { group, start byte, end byte }.
function M.row(cells)
  local parts, highlights, at = {}, {}, 0
  for i, cell in ipairs(cells) do
    local text = M.text(cell[1])
    local shown = #text
    if i < #cells and cell.width then
      text = pad(text, cell.width)
    end
    if cell.group and cell[1] and cell[1] ~= "" then
      highlights[#highlights + 1] = { cell.group, at, at + shown }
    end
    parts[#parts + 1] = text
    at = at + #text + 2
  end
  return rtrim(table.concat(parts, "  ")), highlights
end

-- The widest display width of `key(item)` over `items`, at least `least`.
function M.widest(items, key, least)
  local width = least or 1
  for _, item in ipairs(items) do
    width = math.max(width, vim.fn.strdisplaywidth(M.text(key(item))))
  end
  return width
end

-- A value as JSON, as `gastownctl events` prints it (msgspec): compact, `/` unescaped, null
-- as null. (vim.json.encode escapes every `/` as `\/`; a `\/` pair is always that escape,
-- as a backslash of the text itself is encoded `\\`.)
function M.json(value)
  if value == vim.NIL then
    return "null"
  end
  local ok, text = pcall(vim.json.encode, value)
  if not ok then
    return tostring(value)
  end
  return (text:gsub("\\/", "/"))
end

-- A value shortened for one row: strings as they are, the rest as JSON.
function M.short(value, limit)
  limit = limit or 60
  local text = M.text(type(value) == "string" and value or M.json(value))
  if vim.fn.strchars(text) > limit then
    text = vim.fn.strcharpart(text, 0, limit - 1) .. "…"
  end
  return text
end

-- A session id as shown: its first 8 characters (a unique prefix in practice; the daemon
-- takes prefixes wherever it takes an id).
function M.short_id(id)
  return tostring(id or "?"):sub(1, 8)
end

-- The payload as `key=value` pairs, keys sorted (as `gastownctl events` prints them), without
-- what the line already says: a `role` equal to the actor, an `actor_pid` of `<actor>-<pid>`
-- (shown as pid=), and session ids cut to 8 characters.
function M.summary(payload, actor)
  if type(payload) ~= "table" then
    return ""
  end
  local keys = vim.tbl_keys(payload)
  table.sort(keys)
  local parts = {}
  for _, key in ipairs(keys) do
    local value = payload[key]
    if key == "role" and actor and value == actor then
      value = nil
    elseif key == "actor_pid" and actor and type(value) == "string" then
      local pid = value:match("^" .. vim.pesc(actor) .. "%-(%d+)$")
      if pid then
        key, value = "pid", pid
      end
    elseif key == "session_id" and type(value) == "string" and value:match("^%x+%-%x+%-") then
      value = M.short_id(value)
    end
    if value ~= nil then
      parts[#parts + 1] = key .. "=" .. M.short(value)
    end
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
M.who = who

-- The time of a feed line: `time_format` for today's events, `day_time_format` (with the
-- date) for the others, so that January's lines do not pass for today's.
function M.feed_time(ts, now)
  local epoch = M.epoch(ts)
  if not epoch then
    return tostring(ts or "?")
  end
  local today = os.date("%Y-%m-%d", now or os.time())
  if os.date("%Y-%m-%d", epoch) == today then
    return os.date(config.options.time_format, epoch)
  end
  return os.date(config.options.day_time_format, epoch)
end

local function time_width()
  return math.max(#os.date(config.options.time_format, 0), #os.date(config.options.day_time_format, 0))
end

-- `time  type  actor  summary`; the node is shown (actor@node) when the event has one that is
-- not `local_node` (the node of the daemon answering: its own events need no tag).
function M.event_row(event, node, local_node)
  node = node or event.node
  if node == local_node then
    node = nil
  end
  local actor = event.actor ~= vim.NIL and event.actor or nil
  -- Cut like a payload value, as gastownctl does: a 1 MB actor is no 1 MB row.
  local shown = actor and M.short(actor) or nil
  node = node and node ~= "" and M.short(node) or node
  local cells = {
    { M.feed_time(event.ts), width = time_width(), group = "GastowndTime" },
    { M.short(event.type or "?"), width = 14, group = "GastowndType" },
    { who(shown, nil), group = "GastowndActor" },
    { M.summary(event.payload, actor) },
  }
  if node and node ~= "" then
    -- actor@node: the node in its own colour, right after the actor.
    cells[3] = { who(shown, node), group = "GastowndActor", width = 24 }
  else
    cells[3].width = 24
  end
  local line, highlights = M.row(cells)
  if node and node ~= "" then
    local actor_hl = highlights[3]
    if actor_hl then
      local split = actor_hl[2] + #(shown or "")
      highlights[#highlights + 1] = { "GastowndNode", split, actor_hl[3] }
      actor_hl[3] = split
    end
  end
  return line, highlights
end

function M.event_line(event, node, local_node)
  return (M.event_row(event, node, local_node))
end

-- A line of the plugin's own in a feed: a reconnection, a resync.
function M.marker(text)
  return "-- " .. os.date(config.options.time_format) .. "  " .. text
end

-- A duration in seconds, as `gastownctl sessions` would say it: 42s, 3m 5s, 2h 10m, 3d 4h.
function M.duration(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    return ""
  end
  seconds = math.floor(seconds)
  local days, hours = math.floor(seconds / 86400), math.floor(seconds % 86400 / 3600)
  local minutes, secs = math.floor(seconds % 3600 / 60), seconds % 60
  if days > 0 then
    return string.format("%dd %dh", days, hours)
  elseif hours > 0 then
    return string.format("%dh %dm", hours, minutes)
  elseif minutes > 0 then
    return string.format("%dm %ds", minutes, secs)
  end
  return string.format("%ds", secs)
end

M.SESSION_STATES = { "open", "squashed", "abandoned", "logged" }

local function state_group(state)
  return "GastowndState" .. tostring(state or "?"):gsub("^%l", string.upper)
end

local function nonempty(value)
  if value == nil or value == vim.NIL then
    return nil
  end
  return value
end

-- The columns of the sessions list, for these rows: the last start (the list is sorted by
-- it), short id, state, actor (actor@node for another machine's), end time, duration, steps,
-- end reason and topic (or the digest's summary line).
function M.session_cells(row)
  if row == nil then
    return {
      { "Last start" },
      { "Session" },
      { "State" },
      { "Actor" },
      { "Ended" },
      { "Took" },
      { "Steps" },
      { "End" },
      { "Topic" },
    }
  end
  local started = nonempty(row.last_started_at) or row.started_at
  local ended = nonempty(row.ended_at)
  local took = ""
  if ended and M.epoch(ended) and M.epoch(started) then
    took = M.duration(M.epoch(ended) - M.epoch(started))
  end
  return {
    { M.local_time(started, config.options.date_format), group = "GastowndTime" },
    { M.short_id(row.session_id), group = "GastowndId" },
    { row.state or "?", group = state_group(row.state) },
    { who(row.actor, row.remote and row.node), group = "GastowndActor" },
    { ended and M.local_time(ended, config.options.date_format) or "", group = "GastowndTime" },
    { took },
    -- nil for a session known only from the log (or a daemon too old to count steps).
    { type(row.step_count) == "number" and tostring(row.step_count) or "" },
    { nonempty(row.end_reason) or "" },
    { M.short(M.about(row), 60) },
  }
end

-- What a sessions row is about: its topic, or the digest's summary line; for an open session,
-- what it has changed so far (`row.changed`, from its wisp) before its topic.
function M.about(row)
  local about = nonempty(row.topic) or nonempty(row.summary) or ""
  if row.changed and row.changed ~= "" then
    return row.changed .. (about ~= "" and (" · " .. about) or "")
  end
  return about
end

-- An open session's changes so far, from its wisp: "2 steps: closed gt-1, created gt-2".
function M.changes(wisp)
  local count = wisp.step_count or #(wisp.steps or {})
  if count == 0 then
    return ""
  end
  local seen, parts = {}, {}
  for _, step in ipairs(wisp.steps or {}) do
    local verb = ({
      issue_closed = "closed",
      issue_created = "created",
      issue_reopened = "reopened",
      commit = "commit",
    })[step.kind]
    local ref = nonempty(step.ref)
    if verb and ref and not seen[verb .. ref] then
      seen[verb .. ref] = true
      parts[#parts + 1] = verb .. " " .. ref
    end
  end
  local text = string.format("%d step%s", count, count == 1 and "" or "s")
  return #parts > 0 and (text .. ": " .. table.concat(parts, ", ")) or text
end

-- The header and one line per row, the columns as wide as their widest cell.
function M.session_table(rows)
  local all = { M.session_cells(nil) }
  for _, row in ipairs(rows) do
    all[#all + 1] = M.session_cells(row)
  end
  local widths = {}
  for _, cells in ipairs(all) do
    for i, cell in ipairs(cells) do
      widths[i] = math.max(widths[i] or 0, vim.fn.strdisplaywidth(M.text(cell[1])))
    end
  end
  local lines, highlights = {}, {}
  for n, cells in ipairs(all) do
    for i, cell in ipairs(cells) do
      cell.width = widths[i]
    end
    local line, spans = M.row(cells)
    if n == 1 then
      spans = { { "GastowndHeader", 0, #line } }
    end
    lines[n], highlights[n] = line, spans
  end
  return lines, highlights
end

function M.session_header()
  return (M.session_table({}))[1]
end

function M.session_row(row)
  return (M.session_table({ row }))[2]
end

-- The lines of the "who" window: one per session that touched the issue, in aligned columns.
function M.attribution_table(issue, records)
  if #records == 0 then
    return { string.format("no session is recorded as touching %s", issue) }, { {} }
  end
  local lines = { string.format("%s: %d change%s", issue, #records, #records == 1 and "" or "s") }
  local highlights = { { { "GastowndHeader", 0, #lines[1] } } }
  local action_width = M.widest(records, function(r)
    return r.action or "?"
  end, 7)
  local actor_width = M.widest(records, function(r)
    return who(r.actor, r.remote and r.node)
  end)
  for _, record in ipairs(records) do
    local line, spans = M.row({
      { record.action or "?", width = action_width, group = "GastowndType" },
      { M.local_time(record.at, config.options.date_format), group = "GastowndTime" },
      { M.short_id(record.session_id), group = "GastowndId" },
      { who(record.actor, record.remote and record.node), width = actor_width, group = "GastowndActor" },
      { nonempty(record.digest_id) and ("digest " .. record.digest_id) or "(session open)" },
    })
    lines[#lines + 1], highlights[#highlights + 1] = line, spans
  end
  return lines, highlights
end

function M.attribution_lines(issue, records)
  return (M.attribution_table(issue, records))
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
