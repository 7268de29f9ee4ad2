-- Issue 20: what a daily user sees and does, against a real daemon in a temporary town (the
-- sample town's real log where it matters). Each case failed before its fix.
local h = require("helpers")
local gastownd = require("gastownd")
local feed = require("gastownd.feed")
local sessions = require("gastownd.sessions")
local who = require("gastownd.who")

local SESSION = "5e55a0b1-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
local OTHER = "0be11a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
local THIRD = "c0ffee00-1111-4222-8333-444455556666"

local function setup()
  gastownd.setup({ reconnect_min_ms = 50, reconnect_max_ms = 200 })
  h.clear_messages()
end

local function open_feed(command)
  vim.cmd(command or "GastownFeed")
  h.wait_for("the feed to subscribe", function()
    local state = feed.state()
    return state and state.ever_up and not state.down
  end)
  return feed.state().buf
end

local function open_sessions(text)
  vim.cmd("GastownSessions")
  local buf = vim.api.nvim_get_current_buf()
  h.wait_for_text("the sessions", buf, text)
  return buf
end

local function enter()
  vim.cmd('execute "normal \\<CR>"')
end

local function digest_buffer()
  return h.find_buffer(sessions.DIGEST)
end

-- The sessions rows (not the header): their "Last start" column, as text.
local function starts(buf)
  local found = {}
  for i, line in ipairs(h.lines(buf)) do
    if i > 1 and not line:match("^%-%-") then
      found[#found + 1] = line:sub(1, 16)
    end
  end
  return found
end

local function no_errors()
  h.eq("", vim.v.errmsg, "v:errmsg")
end

return {
  {
    "sessions_sorted_by_the_start_they_show",
    function()
      setup()
      h.ctl("sample")
      local buf = open_sessions("a830aa9f")
      h.truthy(h.lines(buf)[1]:match("^Last start "), h.lines(buf)[1])
      local shown = starts(buf)
      h.truthy(#shown > 50, "rows: " .. #shown)
      for i = 2, #shown do
        if shown[i] > shown[i - 1] then
          error(string.format("row %d (%s) is after row %d (%s)", i, shown[i], i - 1, shown[i - 1]))
        end
      end
      no_errors()
    end,
  },
  {
    "payloads_shown_as_the_cli_shows_them",
    function()
      setup()
      local buf = open_feed()
      h.ctl(
        "emit-json",
        "mail",
        "mayor",
        '{"list":[1,2],"none":null,"objs":[{"a":1}],"ok":false,"obj":{"to":"a/b"},"empty":{},"nil":[]}'
      )
      h.wait_for_text("the mail", buf, "list=")
      local line = h.matching(buf, "list=")[1]
      h.truthy(
        line:find('empty={} list=[1,2] nil=[] none=null obj={"to":"a/b"} objs=[{"a":1}] ok=false', 1, true),
        line
      )
      no_errors()
    end,
  },
  {
    -- Any writer's text: a newline, ESC (an OSC 52 clipboard write), CR, NUL, a C1 CSI, a
    -- bidi override, in the actor, a payload key and values. One event, one clean row.
    "hostile_text_keeps_one_event_a_row",
    function()
      setup()
      local buf = open_feed()
      local actor = "evil\nactor\27]52;c;aGk=\7\r"
      h.ctl(
        "emit-json",
        "mail",
        actor,
        '{"k\\ney":"a\\u0000b","csi":"\\u009b2J","bidi":"\\u202eevil","mark":"hostile-row"}'
      )
      h.wait_for_text("the mail", buf, "hostile-row")
      local rows = h.matching(buf, "hostile-row")
      h.eq(1, #rows, "one row")
      local row = rows[1]
      h.truthy(row:find("evil⏎actor\\u001b]52;c;aGk=\\u0007\\u000d", 1, true), row)
      h.truthy(row:find("k⏎ey=a\\u0000b", 1, true), row)
      h.truthy(row:find("csi=\\u009b2J", 1, true), row)
      h.truthy(row:find("bidi=\\u202eevil", 1, true), row)
      h.eq(nil, row:find("[%z\1-\31\127]"), "no control byte in " .. row)
      -- A 100 KB actor is cut like a payload value, as gastownctl cuts it.
      local long = string.rep("x", 100000)
      h.ctl("emit-json", "mail", long, '{"mark":"long-row"}')
      h.wait_for_text("the long one", buf, "long-row")
      local long_row = h.matching(buf, "long-row")[1]
      h.truthy(#long_row < 400, "a row of " .. #long_row .. " bytes")
      no_errors()
    end,
  },
  {
    "who_float_closes_with_q_and_its_rows_align",
    function()
      setup()
      h.ctl("ctl", "session", "start", "--session", SESSION, "--actor", "gastown/polecats/nux")
      h.ctl("ctl", "session", "start", "--session", OTHER, "--actor", "mayor")
      h.ctl("ctl", "attribute", "gt-w7x", "--session", SESSION, "--action", "reopened")
      h.ctl("ctl", "attribute", "gt-w7x", "--session", OTHER, "--action", "closed")
      vim.cmd("GastownWho gt-w7x")
      h.wait_for("the float", function()
        return who.window and vim.api.nvim_win_is_valid(who.window)
      end)
      h.eq(who.window, vim.api.nvim_get_current_win(), "the float has the focus")
      local lines = h.lines(0)
      h.eq("gt-w7x: 2 changes", lines[1], "title")
      local function column(line, text)
        return (assert(line:find(text, 1, true), line .. " lacks " .. text))
      end
      h.eq(column(lines[2], "  20"), column(lines[3], "  20"), "the time column: " .. vim.inspect(lines))
      h.eq(column(lines[2], "(session open)"), column(lines[3], "(session open)"), "the last column")
      -- <CR> on a row opens that session (open: its wisp), in the digest buffer.
      vim.fn.cursor(2, 1)
      local id = lines[2]:match("  (%x%x%x%x%x%x%x%x)  ")
      enter()
      h.wait_for("the session", function()
        return digest_buffer() and h.has(digest_buffer(), id)
      end)
      h.eq(false, who.window ~= nil and vim.api.nvim_win_is_valid(who.window), "the float closed")
      -- q closes it (it used to start recording a macro).
      vim.cmd("GastownWho gt-w7x")
      h.wait_for("the float", function()
        return who.window and vim.api.nvim_win_is_valid(who.window)
      end)
      local windows = #vim.api.nvim_list_wins()
      vim.api.nvim_feedkeys("q", "x", false)
      h.eq(nil, who.window, "closed by q")
      h.eq(windows - 1, #vim.api.nvim_list_wins(), "windows")
      h.eq("", vim.fn.reg_recording(), "no macro recording")
      no_errors()
    end,
  },
  {
    "logged_session_shows_its_lines",
    function()
      setup()
      h.ctl("sample")
      local buf = open_sessions("logged")
      local line = h.matching(buf, "  logged  ")[1]
      local short = line:match("  (%x%x%x%x%x%x%x%x)  logged")
      vim.fn.search(short .. "  logged")
      h.clear_messages()
      enter()
      h.wait_for("the log's lines", function()
        return digest_buffer() and h.has(digest_buffer(), "# Logged session " .. short)
      end)
      local shown = h.lines(digest_buffer())
      h.contains(shown, "known only from gt's lines", "logged")
      h.contains(shown, "session_start", "its session_start line")
      h.contains(shown, "session_id=" .. short, "its id")
      h.eq({}, h.message_texts(), "no 'has no digest' message")
      -- One digest buffer, reused, unlisted, not wrapped.
      vim.api.nvim_set_current_buf(buf)
      vim.fn.cursor(vim.fn.line("$"), 1)
      enter()
      h.wait_for("another session", function()
        return not h.has(digest_buffer(), "# Logged session " .. short)
      end)
      local digests = 0
      for _, b in ipairs(vim.api.nvim_list_bufs()) do
        if vim.api.nvim_buf_get_name(b):find("gastownd://digest", 1, true) then
          digests = digests + 1
        end
      end
      h.eq(1, digests, "digest buffers")
      h.eq(false, vim.bo[digest_buffer()].buflisted, "listed")
      h.eq(false, vim.wo.wrap, "wrap")
      no_errors()
    end,
  },
  {
    "refresh_keeps_the_cursor_on_its_session",
    function()
      setup()
      h.ctl("hook", SESSION, "start")
      h.ctl("hook", SESSION, "close", "gt-c9x")
      -- (Another actor: a hook start of the same actor would supersede the first.)
      h.ctl("ctl", "session", "start", "--session", OTHER, "--actor", "gastown/crew/max")
      local buf = open_sessions(SESSION:sub(1, 8))
      -- An open session's row says what it has changed so far.
      h.wait_for_text("its changes", buf, "1 step: closed gt-c9x")
      vim.fn.search(SESSION:sub(1, 8))
      -- A new session goes on top; `r`, and the auto-refresh on its session_start push.
      h.ctl("ctl", "session", "start", "--session", THIRD, "--actor", "mayor")
      h.wait_for_text("the auto-refresh", buf, THIRD:sub(1, 8))
      h.truthy(vim.api.nvim_get_current_line():find(SESSION:sub(1, 8), 1, true), vim.api.nvim_get_current_line())
      vim.cmd("normal r")
      vim.wait(300)
      h.truthy(vim.api.nvim_get_current_line():find(SESSION:sub(1, 8), 1, true), vim.api.nvim_get_current_line())
      -- Filters: hide logged, state, in the buffer's name.
      vim.cmd("normal o")
      h.wait_for("ordered by actor", function()
        return vim.api.nvim_buf_get_name(buf):find("order=actor", 1, true) ~= nil
      end)
      h.truthy(vim.api.nvim_get_current_line():find(SESSION:sub(1, 8), 1, true), "still on its session")
      h.truthy(h.lines(buf)[2]:find("  gastown/crew/max", 1, true), "gastown/crew/max first: " .. h.lines(buf)[2])
      h.truthy(h.lines(buf)[4]:find("  mayor", 1, true), "mayor last: " .. h.lines(buf)[4])
      vim.cmd("normal f")
      h.wait_for("the open ones", function()
        return vim.api.nvim_buf_get_name(buf):find("state=open", 1, true) ~= nil
      end)
      h.truthy(h.has(buf, THIRD:sub(1, 8)), "open session shown")
      no_errors()
    end,
  },
  {
    "all_nodes_feed_without_federation_tags_no_line",
    function()
      setup()
      local buf = open_feed("GastownFeed!")
      h.ctl("emit", "mail", "mayor", "subject=whose")
      h.wait_for_text("the mail", buf, "subject=whose")
      local line = h.matching(buf, "subject=whose")[1]
      h.eq(nil, line:find("mayor@", 1, true), line)
      h.truthy(vim.api.nvim_buf_get_name(buf):find("all_nodes", 1, true), "the filter in the name")
      no_errors()
    end,
  },
  {
    "feed_types_checked_completed_and_comma_separated",
    function()
      setup()
      vim.cmd("GastownFeed slingg")
      h.eq(nil, feed.state(), "no feed for a typo")
      local message = h.message_texts()[1] or ""
      h.truthy(message:match("^gastownd: unknown event type slingg %(known: .*sling.*%)$"), message)
      h.contains(vim.fn.getcompletion("GastownFeed sl", "cmdline"), "sling", "completion")
      h.contains(vim.fn.getcompletion("GastownFeed sling,do", "cmdline"), "sling,done", "after a comma")
      local buf = open_feed("GastownFeed sling,done")
      h.eq({ "sling", "done" }, feed.state().types, "comma-separated types")
      h.truthy(vim.api.nvim_buf_get_name(buf):find("types=sling,done", 1, true), vim.api.nvim_buf_get_name(buf))
      -- Session ids complete too (from the sessions seen).
      h.ctl("hook", SESSION, "start")
      sessions.prefetch(nil)
      h.wait_for("the ids", function()
        return #vim.fn.getcompletion("GastownDigest 5e", "cmdline") > 0
      end)
      h.contains(vim.fn.getcompletion("GastownDigest 5e", "cmdline"), SESSION, "session ids")
      no_errors()
    end,
  },
  {
    "feed_waits_then_enter_opens_the_session_and_question_mark_lists_keys",
    function()
      setup()
      vim.cmd("GastownFeed")
      local buf = feed.state().buf
      h.eq({ feed.WAITING }, h.lines(buf), "before the daemon answers")
      h.wait_for_text("the empty feed", buf, "no events yet")
      h.ctl("hook", SESSION, "start")
      h.wait_for_text("the start", buf, "session_start")
      h.eq(0, h.count(buf, "no events yet"), "placeholder gone")
      -- Colour: groups linked to standard ones, on the line's cells.
      local function linked(group)
        return vim.fn.synIDattr(vim.fn.synIDtrans(vim.fn.hlID(group)), "name")
      end
      h.eq("Type", linked("GastowndType"), "GastowndType")
      h.eq("Comment", linked("GastowndTime"), "GastowndTime")
      local ns = require("gastownd.highlight").NS
      local groups = {}
      for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })) do
        groups[mark[4].hl_group] = true
      end
      h.truthy(groups.GastowndType and groups.GastowndTime and groups.GastowndActor, vim.inspect(groups))
      vim.fn.search("session_start")
      enter()
      h.wait_for("the session's wisp", function()
        return digest_buffer() and h.has(digest_buffer(), SESSION)
      end)
      vim.api.nvim_set_current_buf(buf)
      vim.cmd("normal ?")
      h.truthy(who.window, "the keys float")
      h.contains(h.lines(0), "<CR>", "keys")
      vim.api.nvim_feedkeys("q", "x", false)
      h.eq(nil, who.window, "closed")
      no_errors()
    end,
  },
}
