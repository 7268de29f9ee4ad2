-- Cases against a real daemon in a temporary town (started by tests/editors/, pytest). Each
-- case runs in a fresh Neovim and a fresh town; they drive the public commands and read the
-- buffers the user would read.
local h = require("helpers")
local gastownd = require("gastownd")
local feed = require("gastownd.feed")

local uv = vim.loop
local SESSION = "5e55a0b1-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
local OPEN_SESSION = "0be11a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
local ACTOR = "gastown/polecats/nux"

-- Quick reconnects, so that the cases do not wait on the default backoff.
local function setup()
  gastownd.setup({ reconnect_min_ms = 50, reconnect_max_ms = 200, statusline_interval_ms = 50 })
  h.clear_messages()
end

local function open_feed(command)
  vim.cmd(command or "GastownFeed")
  local buf = feed.state() and feed.state().buf
  h.truthy(buf, "the feed buffer")
  h.wait_for("the feed to subscribe", function()
    local state = feed.state()
    return state and state.ever_up and not state.down
  end)
  return buf
end

local function event_lines(buf)
  local lines = {}
  for _, line in ipairs(h.lines(buf)) do
    if line ~= "" and not line:match("^%-%- ") then
      lines[#lines + 1] = line
    end
  end
  return lines
end

-- The line numbers of the lines containing each text, asserting each occurs exactly once.
local function once_each(buf, texts)
  local lines = h.lines(buf)
  local at = {}
  for _, text in ipairs(texts) do
    local found = {}
    for i, line in ipairs(lines) do
      if line:find(text, 1, true) then
        found[#found + 1] = i
      end
    end
    h.eq(1, #found, string.format("lines holding %q in %s", text, vim.inspect(lines)))
    at[#at + 1] = found[1]
  end
  return at
end

local function ascending(numbers, what)
  for i = 2, #numbers do
    if numbers[i] <= numbers[i - 1] then
      error(what .. " out of order: " .. vim.inspect(numbers), 2)
    end
  end
end

local function no_errors()
  h.eq("", vim.v.errmsg, "v:errmsg")
  for _, message in ipairs(h.message_texts()) do
    if message:find("traceback", 1, true) or message:find("E5108", 1, true) or message:find("\n", 1, true) then
      error("not a one-line message: " .. message, 2)
    end
  end
end

return {
  {
    "feed_shows_new_event_within_1s",
    function()
      setup()
      h.ctl("emit", "mail", "mayor", "subject=before-the-feed")
      local buf = open_feed()
      h.truthy(h.has(buf, "subject=before-the-feed"), "the feed opens with the latest events")
      h.ctl("emit", "mail", "mayor", "subject=hello-feed", "to=gastown/crew/joe")
      local emitted = uv.hrtime()
      h.wait_for_text("the new event in the feed", buf, "subject=hello-feed", 1000)
      io.stdout:write(string.format("# emit to feed line: %.0f ms\n", (uv.hrtime() - emitted) / 1e6))
      local line = h.matching(buf, "subject=hello-feed")[1]
      h.truthy(line:match("^%d%d:%d%d:%d%d%s+mail%s+  mayor%s+  subject=hello%-feed to=gastown/crew/joe$"), line)
      h.eq(line, h.lines(buf)[vim.api.nvim_buf_line_count(buf)], "the newest event is at the bottom")
      -- Wiping the buffer stops the feed (and closes its connection).
      vim.cmd("bwipeout! " .. buf)
      h.eq(nil, feed.state(), "the feed after :bwipeout")
      no_errors()
    end,
  },
  {
    "feed_filters_types_and_all_nodes",
    function()
      setup()
      local buf = open_feed("GastownFeed! sling")
      h.eq(true, feed.state().all_nodes, "GastownFeed! asks for all nodes")
      h.eq({ "sling" }, feed.state().types, "the types")
      h.ctl("emit", "mail", "mayor", "subject=not-shown")
      h.ctl("emit", "sling", "mayor", "bead=gt-77", "target=gastown/polecats/slit")
      h.wait_for_text("the sling", buf, "bead=gt-77", 1000)
      h.eq(false, h.has(buf, "not-shown"), "a mail in a sling feed")
      -- The last `feed_lines` lines are kept.
      gastownd.setup({ feed_lines = 3 })
      for i = 1, 5 do
        h.ctl("emit", "sling", "mayor", "bead=gt-8" .. i)
      end
      h.wait_for_text("the last sling", buf, "bead=gt-85", 2000)
      h.eq(3, #h.lines(buf), "lines kept")
      h.truthy(h.lines(buf)[1]:find("bead=gt-83", 1, true), "the oldest kept")
      no_errors()
    end,
  },
  {
    "sessions_list_hook_session_and_open_digest",
    function()
      setup()
      h.ctl("hook", SESSION, "start")
      h.ctl("hook", SESSION, "close", "gt-d1g")
      h.ctl("hook", SESSION, "end")
      h.ctl("hook", OPEN_SESSION, "start")
      vim.cmd("GastownSessions")
      local buf = h.find_buffer("gastownd://sessions")
      h.wait_for_text("the hook's session in the list", buf, SESSION:sub(1, 8))
      local row = h.matching(buf, SESSION:sub(1, 8))[1]
      h.truthy(row:match("  squashed  " .. vim.pesc(ACTOR) .. "  .*  prompt_input_exit  closed gt%-d1g$"), row)
      h.truthy(h.matching(buf, OPEN_SESSION:sub(1, 8))[1]:find("  open  ", 1, true), "the open one")

      -- <CR> on the row opens the digest.
      vim.fn.search(SESSION:sub(1, 8))
      vim.cmd("execute \"normal \\<CR>\"")
      h.wait_for("the digest buffer", function()
        return vim.api.nvim_buf_get_name(0) == "gastownd://digest" and h.lines(0)[1] ~= ""
      end)
      local digest = h.lines(0)
      h.eq("# Digest: " .. SESSION, digest[1], "title")
      h.contains(digest, "## Session Summary", "digest")
      h.contains(digest, "**Actor**: " .. ACTOR, "digest")
      h.contains(digest, "gt-d1g", "digest")
      h.contains(digest, "prompt_input_exit", "digest")
      h.eq("markdown", vim.bo.filetype, "filetype")
      -- <CR> on an issue id there: who touched it.
      vim.fn.cursor(1, 1)
      vim.fn.search("gt-d1g")
      vim.cmd("execute \"normal \\<CR>\"")
      local who = require("gastownd.who")
      h.wait_for("the who float", function()
        return who.window and vim.api.nvim_win_is_valid(who.window)
      end)
      h.eq("gt-d1g: 1 change", h.lines(vim.api.nvim_win_get_buf(who.window))[1], "who from the digest")
      who.close()

      -- An open session has no digest yet: its wisp.
      vim.api.nvim_set_current_buf(buf)
      vim.fn.cursor(1, 1)
      vim.fn.search(OPEN_SESSION:sub(1, 8))
      vim.cmd("execute \"normal \\<CR>\"")
      h.wait_for("the open session's buffer", function()
        return vim.api.nvim_buf_get_name(0) == "gastownd://digest" and h.has(0, OPEN_SESSION)
      end)
      h.contains(h.lines(0), "no digest yet", "wisp")

      -- `s` runs gastownctl seance in a terminal split (here Claude Code is not installed).
      vim.api.nvim_set_current_buf(buf)
      vim.fn.cursor(1, 1)
      vim.fn.search(SESSION:sub(1, 8))
      local windows = #vim.api.nvim_list_wins()
      vim.cmd("normal s")
      vim.cmd("stopinsert")
      h.eq(windows + 1, #vim.api.nvim_list_wins(), "a split")
      h.eq("terminal", vim.bo.buftype, "a terminal")
      local term = vim.api.nvim_get_current_buf()
      h.wait_for_text("seance's answer", term, "gastownctl:")
      h.contains(h.lines(term), "'claude' is not on PATH", "seance output")
      no_errors()
    end,
  },
  {
    "who_shows_bd_close_attribution",
    function()
      setup()
      h.ctl("hook", SESSION, "start")
      h.ctl("hook", SESSION, "close", "gt-w7x")
      -- A file inside the town: its directory, not GT_TOWN_ROOT, names the town.
      vim.env.GT_TOWN_ROOT = "/nonexistent/town"
      vim.fn.mkdir(h.town .. "/gastown/crew/max", "p")
      vim.cmd("edit " .. vim.fn.fnameescape(h.town .. "/gastown/crew/max/notes.md"))
      vim.api.nvim_buf_set_lines(0, 0, -1, false, { "the fix for gt-w7x landed" })
      vim.fn.cursor(1, vim.fn.stridx("the fix for gt-w7x landed", "w7x") + 1)
      vim.cmd("GastownWho")
      local who = require("gastownd.who")
      h.wait_for("the float", function()
        return who.window and vim.api.nvim_win_is_valid(who.window)
      end)
      h.truthy(vim.api.nvim_win_get_config(who.window).relative ~= "", "a floating window")
      local lines = h.lines(vim.api.nvim_win_get_buf(who.window))
      h.eq("gt-w7x: 1 change", lines[1], "title")
      h.truthy(
        lines[2]:match(
          "^closed   %d+%-%d+%-%d+ %d+:%d+  " .. SESSION:sub(1, 8) .. "  " .. vim.pesc(ACTOR) .. "  %(session open%)$"
        ),
        lines[2]
      )
      -- It has the focus; leaving it closes it.
      h.eq(who.window, vim.api.nvim_get_current_win(), "focused")
      vim.cmd("wincmd p")
      vim.wait(50)
      h.eq(nil, who.window and vim.api.nvim_win_is_valid(who.window) or nil, "closed on leaving")

      vim.cmd("GastownWho gt-none")
      h.wait_for("the float", function()
        return who.window and vim.api.nvim_win_is_valid(who.window)
      end)
      h.eq({ "no session is recorded as touching gt-none" }, h.lines(vim.api.nvim_win_get_buf(who.window)), "none")

      h.clear_messages()
      vim.cmd("wincmd p")
      vim.wait(50)
      vim.cmd("normal! 0")
      vim.cmd("GastownWho")
      h.eq({ "gastownd: no issue id under the cursor (like gt-a1b2); name one: :GastownWho gt-a1b2" }, h.message_texts(), "not on an id")
      no_errors()
    end,
  },
  {
    "daemon_stopped_one_message",
    function()
      setup()
      local buf = open_feed()
      h.ctl("stop")
      h.wait_for("the feed to notice", function()
        return #h.messages > 0
      end)
      vim.wait(1000) -- several reconnect attempts
      h.eq({ "gastownd: the daemon went away; the feed will resume when it is back" }, h.message_texts(), "messages")
      h.eq(1, h.count(buf, "reconnecting"), "one line in the feed")

      h.clear_messages()
      vim.cmd("GastownSessions")
      local message = h.one_message()
      h.truthy(message:match("^gastownd: the daemon is not running %(nothing listens on /.+%.sock%)$"), message)
      gastownd.statusline()
      h.wait_for("the statusline", function()
        return gastownd.statusline() == "gastownd: down"
      end)
      no_errors()
    end,
  },
  {
    "feed_resumes_after_restart",
    function()
      setup()
      local buf = open_feed()
      h.ctl("emit", "nudge", "mayor", "mark=A")
      h.wait_for_text("A", buf, "mark=A")
      h.ctl("stop")
      h.wait_for_text("the feed to notice", buf, "reconnecting")
      h.ctl("append", "B", "3") -- gt writes while the daemon is down
      h.ctl("start")
      h.wait_for_text("the feed to reconnect", buf, "reconnected", 5000)
      h.ctl("emit", "nudge", "mayor", "mark=C")
      h.wait_for_text("C", buf, "mark=C")
      local at = once_each(buf, { "mark=A", "reconnecting", "reconnected", "mark=B-1", "mark=B-2", "mark=B-3", "mark=C" })
      ascending(at, "feed lines")
      h.eq(5, #event_lines(buf), "events in the feed: " .. vim.inspect(h.lines(buf)))
      h.eq(1, #h.messages, "one message for the outage")
      no_errors()
    end,
  },
  {
    "feed_resyncs_when_the_log_was_replaced",
    function()
      setup()
      local buf = open_feed()
      h.ctl("emit", "nudge", "mayor", "mark=A")
      h.wait_for_text("A", buf, "mark=A")
      h.ctl("stop")
      h.ctl("replace-log", "R", "2") -- a new file while the daemon is down: a new epoch
      h.ctl("start")
      h.wait_for_text("the resync notice", buf, "resync:", 5000)
      h.wait_for_text("the new log's lines", buf, "mark=R-2")
      h.ctl("emit", "nudge", "mayor", "mark=C")
      h.wait_for_text("C", buf, "mark=C")
      local at = once_each(buf, { "mark=A", "resync:", "mark=R-1", "mark=R-2", "mark=C" })
      ascending(at, "feed lines")
      no_errors()
    end,
  },
  {
    "feed_after_a_full_prune",
    function()
      -- Every line pruned, then new ones: the feed opens, subscribes once and shows each
      -- event once, even where the daemon answers its own head cursor with a resync.
      setup()
      h.ctl("append", "OLD", "2", "--old")
      h.ctl("prune")
      h.ctl("emit", "nudge", "mayor", "mark=N1")
      local buf = open_feed()
      h.ctl("emit", "nudge", "mayor", "mark=N2")
      h.wait_for_text("N2", buf, "mark=N2")
      vim.wait(300)
      ascending(once_each(buf, { "mark=N1", "mark=N2" }), "feed lines")
      h.eq(0, h.count(buf, "resync"), "resync lines")
      h.eq(false, h.has(buf, "mark=OLD"), "pruned lines shown")
      no_errors()
    end,
  },
  {
    "statusline_counts_open_sessions",
    function()
      setup()
      gastownd.statusline()
      h.wait_for("the first count", function()
        return gastownd.statusline() == "gastownd: 0 open"
      end)
      h.ctl("hook", SESSION, "start")
      h.wait_for("one open session", function()
        return gastownd.statusline() == "gastownd: 1 open"
      end)
      h.ctl("stop")
      h.wait_for("down", function()
        return gastownd.statusline() == "gastownd: down"
      end)
      h.eq({}, h.message_texts(), "the statusline never talks")
    end,
  },
}
