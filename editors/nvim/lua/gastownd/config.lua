-- Options, their defaults, and the one way the plugin talks to the user.
local M = {}

M.defaults = {
  -- The command that prints the socket path (`gastownctl sockname`); a list or a string.
  gastownctl = { "gastownctl" },
  -- Skip `gastownctl sockname` and use this socket path.
  socket = nil,
  -- Use this town instead of the buffer's (GT_TOWN_ROOT and the default come after the buffer's).
  town_root = nil,
  -- Every request gives up after this long; the editor never waits on the daemon.
  timeout_ms = 3000,
  -- Lines kept in the feed buffer (the oldest go first).
  feed_lines = 500,
  -- Reconnect delays of the feed: doubled from min to max while the daemon is away.
  reconnect_min_ms = 250,
  reconnect_max_ms = 5000,
  -- Rows fetched for :GastownSessions.
  sessions_limit = 200,
  -- statusline() refreshes its cached text at most this often.
  statusline_interval_ms = 5000,
  -- Local time of feed rows (os.date format).
  time_format = "%H:%M:%S",
  -- Local time of feed rows from another day than today.
  day_time_format = "%m-%d %H:%M",
  -- Local time of session and attribution rows.
  date_format = "%Y-%m-%d %H:%M",
}

M.options = vim.deepcopy(M.defaults)

function M.setup(opts)
  opts = opts or {}
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- A list replaces the default list; tbl_deep_extend would merge them index by index.
  M.options.gastownctl = opts.gastownctl or M.defaults.gastownctl
  if type(M.options.gastownctl) == "string" then
    M.options.gastownctl = { M.options.gastownctl }
  end
end

-- One line, prefixed, through vim.notify (which the user may route elsewhere).
function M.notify(message, level)
  vim.notify("gastownd: " .. message, level or vim.log.levels.WARN)
end

return M
