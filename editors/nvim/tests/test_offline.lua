-- Cases that need no daemon: formatting, the issue under the cursor, town roots, and the
-- failures the user must see as one line (a hung daemon, a missing gastownctl).
local h = require("helpers")
local format = require("gastownd.format")
local gastownd = require("gastownd")
local town = require("gastownd.town")

local uv = vim.loop

local function tempdir()
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, "p")
  return vim.loop.fs_realpath(dir)
end

local function touch(path)
  vim.fn.mkdir(vim.fn.fnamemodify(path, ":h"), "p")
  vim.fn.writefile({ "{}" }, path)
end

return {
  {
    "format_time",
    function()
      h.eq(1795571447, format.epoch("2026-11-25T01:50:47Z"), "epoch")
      h.eq(1795571447, format.epoch("2026-11-25T02:50:47+01:00"), "epoch with an offset")
      h.eq(1795571447, format.epoch("2026-11-24T20:50:47.25-05:00"), "epoch with a fraction")
      h.eq(951868799, format.epoch("2000-02-29T23:59:59Z"), "leap day")
      h.eq(0, format.epoch("1970-01-01T00:00:00Z"), "epoch zero")
      h.eq(nil, format.epoch("yesterday"), "not a timestamp")
      h.eq(os.date("%H:%M:%S", 1795571447), format.local_time("2026-11-25T01:50:47Z", "%H:%M:%S"), "local")
      h.eq("garbage", format.local_time("garbage", "%H:%M:%S"), "unparsable stays as is")
    end,
  },
  {
    "format_rows",
    function()
      gastownd.setup({})
      local event = {
        ts = "2026-11-25T01:50:47Z",
        type = "sling",
        actor = "mayor",
        payload = { target = "gastown/polecats/nux", bead = "gt-42", n = 3, note = "two\nlines" },
      }
      local line = format.event_line(event)
      -- Not from today: the date is shown.
      h.truthy(
        line:match("^11%-25 %d%d:%d%d  sling%s+  mayor%s+  bead=gt%-42 n=3 note=two⏎lines target=gastown/polecats/nux$"),
        "event line: " .. line
      )
      event.ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
      h.truthy(format.event_line(event):match("^%d%d:%d%d:%d%d     sling"), "today's: " .. format.event_line(event))
      h.truthy(format.event_line(event, "laptop"):find("mayor@laptop", 1, true), "node from the push")
      h.eq(nil, format.event_line(event, "laptop", "laptop"):find("@", 1, true), "this node's: no tag")
      event.node = "tower"
      h.truthy(format.event_line(event):find("mayor@tower", 1, true), "node from the event")
      h.truthy(format.event_line({ type = "x" }):match("^%?%s+x"), "an event without ts or actor")
      h.eq("ab…", format.short("abcdef", 3), "shortened")
      -- No repeated fields: role = actor, actor_pid = actor-pid, the full session id.
      local start = format.summary({
        role = "gastown/witness",
        actor_pid = "gastown/witness-21180",
        session_id = "2d777fd1-4c9a-4a15-b500-2b073cc60086",
        topic = "patrol",
      }, "gastown/witness")
      h.eq("pid=21180 session_id=2d777fd1 topic=patrol", start, "session_start summary")

      local session = {
        session_id = "7f3c2a10-5b8e-4d2f-9a61-0c4e8b2d9f11",
        started_at = "2026-01-20T01:50:47Z",
        last_started_at = "2026-11-25T01:50:47Z",
        ended_at = "2026-11-25T03:00:00Z",
        state = "squashed",
        actor = "gastown/polecats/nux",
        end_reason = "done",
        topic = "fix gt-42",
        node = "laptop",
        remote = true,
        step_count = 3,
      }
      local row = format.session_row(session)
      local last = vim.pesc(os.date("%Y-%m-%d %H:%M", 1795571447))
      h.truthy(row:match("^" .. last .. "  7f3c2a10  squashed  gastown/polecats/nux@laptop  .-  1h 9m  3      done  fix gt%-42$"), row)
      session.remote = false
      h.truthy(format.session_row(session):find("  gastown/polecats/nux  ", 1, true), "a local one")
      h.truthy(format.session_header():match("^Last start%s+Session%s+State%s+Actor%s+Ended%s+Took%s+Steps%s+End%s+Topic$"), "header")
      session.step_count = vim.NIL
      h.truthy(format.session_row(session):match("  1h 9m         done  "), "no count: an empty cell")

      local lines = format.attribution_lines("gt-42", {
        { session_id = "7f3c2a10-5b8e", action = "reopened", at = "2026-11-25T01:50:47Z", actor = "nux", digest_id = "dg-1" },
        { session_id = "8d1e6c2a-4f0b", action = "created", at = "2026-11-25T01:50:47Z", actor = "gastown/crew/max" },
      })
      h.eq("gt-42: 2 changes", lines[1], "title")
      h.truthy(lines[2]:match("^reopened  .*  7f3c2a10  nux               digest dg%-1$"), lines[2])
      h.truthy(lines[3]:match("^created   .*  8d1e6c2a  gastown/crew/max  %(session open%)$"), lines[3])
      h.eq(#lines[2]:match("^(.*)digest"), #lines[3]:match("^(.*)%(session"), "aligned")
      h.eq({ "no session is recorded as touching gt-1" }, format.attribution_lines("gt-1", {}), "none")
    end,
  },
  {
    "issue_under_cursor",
    function()
      local line = "closed gt-a1b2. then spotter-dov.3, and (hq-cv-4k3kg) not well"
      local function at(word, offset)
        local col = assert(line:find(word, 1, true)) - 1 + (offset or 0)
        return format.issue_at(line, col)
      end
      h.eq("gt-a1b2", at("gt-a1b2"), "start of the id")
      h.eq("gt-a1b2", at("gt-a1b2", 5), "inside the id")
      h.eq("spotter-dov.3", at("spotter-dov.3", 10), "dotted child id")
      h.eq("hq-cv-4k3kg", at("hq-cv-4k3kg", 3), "several hyphens")
      h.eq(nil, at("closed"), "a plain word")
      h.eq(nil, format.issue_at(line, 6), "the space between words")
      h.eq(nil, format.issue_at("GT-12", 1), "upper case is not a Beads id")
    end,
  },
  {
    "town_roots",
    function()
      gastownd.setup({})
      local base = tempdir()
      touch(base .. "/outer/mayor/town.json")
      touch(base .. "/outer/inner/mayor/town.json")
      vim.fn.mkdir(base .. "/outer/inner/rig/crew/max", "p")
      vim.fn.mkdir(base .. "/loose/mayor", "p")
      vim.fn.mkdir(base .. "/loose/rig", "p")
      vim.fn.mkdir(base .. "/nowhere", "p")
      h.eq(base .. "/outer", town.find_root(base .. "/outer/inner/rig/crew/max"), "the outermost town")
      h.eq(base .. "/loose", town.find_root(base .. "/loose/rig"), "a mayor/ directory without town.json")
      h.eq(nil, town.find_root(base .. "/nowhere"), "outside any town")

      -- The buffer's directory wins over GT_TOWN_ROOT; elsewhere gastownctl decides (nil).
      vim.cmd("edit " .. vim.fn.fnameescape(base .. "/outer/inner/rig/crew/max/notes.md"))
      h.eq(base .. "/outer", town.root_for(0), "from the buffer's file")
      vim.cmd("edit " .. vim.fn.fnameescape(base .. "/nowhere/x.txt"))
      h.eq(nil, town.root_for(0), "a file outside any town")
      gastownd.setup({ town_root = base .. "/loose/" })
      h.eq(base .. "/loose", town.root_for(0), "the town_root option")
      gastownd.setup({})
      vim.fn.delete(base, "rf")
    end,
  },
  {
    "hung_daemon_times_out",
    function()
      -- A socket that accepts and never answers: the editor must not wait on it.
      local dir = tempdir()
      local path = dir .. "/hung.sock"
      local server = uv.new_pipe(false)
      assert(server:bind(path))
      local accepted = {}
      server:listen(8, function()
        local client = uv.new_pipe(false)
        server:accept(client)
        accepted[#accepted + 1] = client
        client:read_start(function() end)
      end)
      gastownd.setup({ socket = path, timeout_ms = 300 })
      h.clear_messages()
      local started = uv.hrtime()
      vim.cmd("GastownSessions")
      local returned_ms = (uv.hrtime() - started) / 1e6
      h.truthy(returned_ms < 100, string.format("the command returned after %.0f ms", returned_ms))
      h.wait_for("the timeout message", function()
        return #h.messages > 0
      end, 2000)
      local waited_ms = (uv.hrtime() - started) / 1e6
      h.truthy(waited_ms >= 290 and waited_ms < 1500, string.format("timed out after %.0f ms", waited_ms))
      vim.wait(400)
      h.eq(1, #h.messages, "one message")
      h.eq("gastownd: the daemon did not answer `sessions` within 0.3 s", h.messages[1].message, "message")
      h.contains(h.lines(0), "did not answer", "the sessions buffer says it too")
      for _, client in ipairs(accepted) do
        client:close()
      end
      server:close()
      gastownd.setup({})
    end,
  },
  {
    "missing_gastownctl",
    function()
      gastownd.setup({ gastownctl = { "/nonexistent/gastownctl" } })
      h.clear_messages()
      vim.cmd("GastownWho gt-1")
      local message = h.one_message()
      h.truthy(message:match("^gastownd: cannot run `/nonexistent/gastownctl sockname` %(ENOENT"), message)
      gastownd.setup({})
    end,
  },
}
