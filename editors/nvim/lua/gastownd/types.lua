-- Event types: the filter syntax both editors accept, the known types, completion.
--
-- The set of types is open (`gt activity emit` takes any), so "known" means Gas Town's and
-- gastownd's own types (docs/editors.md lists them) plus every type this editor has seen in
-- an event. A type outside that set is refused with the list, so that a typo (`slingg`) is an
-- error and not a feed that stays silently empty.
local M = {}

M.BUILTIN = {
  "boot", "done", "escalation_acked", "escalation_closed", "escalation_sent", "halt",
  "handoff", "hook", "mail", "mass_death", "merge_failed", "merge_skipped", "merge_started",
  "merged", "nudge", "patrol_complete", "patrol_started", "polecat_checked", "polecat_nudged",
  "scheduler_close_retry", "scheduler_dispatch", "scheduler_dispatch_failed",
  "scheduler_enqueue", "session_death", "session_end", "session_start", "sling", "spawn",
  "unhook",
}

local seen = {}

-- An event of this type was shown: it is known from now on.
function M.saw(event_type)
  if type(event_type) == "string" then
    seen[event_type] = true
  end
end

function M.known()
  local set = {}
  for _, name in ipairs(M.BUILTIN) do
    set[name] = true
  end
  for name, _ in pairs(seen) do
    set[name] = true
  end
  local list = vim.tbl_keys(set)
  table.sort(list)
  return list, set
end

-- The types named by `args` (a list of words; each may hold several, separated by commas):
-- `sling done`, `sling,done` and `sling, done` are the same. Returns the list, or nil and a
-- one-line error naming the known types.
function M.parse(args)
  local types, unknown = {}, {}
  local _, known = M.known()
  for _, arg in ipairs(args or {}) do
    for name in tostring(arg):gmatch("[^,%s]+") do
      if not known[name] then
        unknown[#unknown + 1] = name
      elseif not vim.tbl_contains(types, name) then
        types[#types + 1] = name
      end
    end
  end
  if #unknown > 0 then
    local list = M.known()
    return nil,
      string.format(
        "unknown event type%s %s (known: %s)",
        #unknown == 1 and "" or "s",
        table.concat(unknown, ", "),
        table.concat(list, ", ")
      )
  end
  return types
end

-- Completion of the last word of a command line (after the last space or comma).
function M.complete(lead)
  local prefix = lead:match("^(.*,)") or ""
  local word = lead:sub(#prefix + 1)
  local found = {}
  for _, name in ipairs((M.known())) do
    if name:sub(1, #word) == word then
      found[#found + 1] = prefix .. name
    end
  end
  return found
end

return M
