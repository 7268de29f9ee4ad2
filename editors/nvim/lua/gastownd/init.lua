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

-- opts: { types = { "sling", ... } (or "sling,done" words), all_nodes = bool }. An unknown
-- type is an error naming the known ones (see gastownd.types).
function M.feed(opts)
  opts = vim.deepcopy(opts or {})
  local types, err = require("gastownd.types").parse(opts.types)
  if not types then
    require("gastownd.config").notify(err, vim.log.levels.ERROR)
    return nil
  end
  opts.types = types
  return require("gastownd.feed").open(opts)
end

-- A session by id or unique prefix: its digest, its wisp while open, or its lines in the log.
function M.digest(id)
  local root = require("gastownd.town").root_for(0)
  return require("gastownd.sessions").show_session(root, id, {})
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
