-- gastownd for Neovim: the town's event feed, sessions and attribution beside the code.
--
--   require("gastownd").setup({ ... })   options: see :help gastownd-configuration
--   require("gastownd").statusline()     "gastownd: 2 open" / "gastownd: down", never blocks
local M = {}

function M.setup(opts)
  require("gastownd.config").setup(opts)
  require("gastownd.town").reset()
  require("gastownd.statusline").reset()
end

-- opts: { types = { "sling", ... }, all_nodes = bool }
function M.feed(opts)
  return require("gastownd.feed").open(opts)
end

function M.sessions()
  return require("gastownd.sessions").open()
end

-- issue: an issue id; nil for the Beads id under the cursor.
function M.who(issue)
  return require("gastownd.who").show(issue)
end

function M.statusline()
  return require("gastownd.statusline").get()
end

return M
