-- gastownd: commands; the code loads on first use (lua/gastownd/).
if vim.g.loaded_gastownd then
  return
end
vim.g.loaded_gastownd = true

if vim.fn.has("nvim-0.7") ~= 1 then
  vim.api.nvim_echo({ { "gastownd needs Neovim 0.7 or newer", "WarningMsg" } }, true, {})
  return
end

vim.api.nvim_create_user_command("GastownFeed", function(cmd)
  require("gastownd").feed({ types = cmd.fargs, all_nodes = cmd.bang })
end, {
  nargs = "*",
  bang = true,
  complete = function(lead)
    return require("gastownd.types").complete(lead)
  end,
  desc = "gastownd: live event feed [TYPE...] (! all nodes)",
})

vim.api.nvim_create_user_command("GastownSessions", function()
  require("gastownd").sessions()
end, { desc = "gastownd: the sessions, every node's" })

vim.api.nvim_create_user_command("GastownWho", function(cmd)
  require("gastownd").who(cmd.args)
end, { nargs = "?", desc = "gastownd: which sessions touched ISSUE (default: the id here)" })

vim.api.nvim_create_user_command("GastownDigest", function(cmd)
  require("gastownd").digest(cmd.args)
end, {
  nargs = 1,
  complete = function(lead)
    local sessions = require("gastownd.sessions")
    sessions.prefetch(require("gastownd.town").root_for(0))
    return sessions.complete_ids(lead)
  end,
  desc = "gastownd: a session's digest (or wisp, or log lines), by id or prefix",
})
