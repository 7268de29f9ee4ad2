-- A small test runner for the Neovim plugin, headless:
--
--   nvim --headless --clean --cmd 'set rtp^=editors/nvim' -c 'luafile editors/nvim/tests/run.lua'
--
-- It loads every tests/test_*.lua (each returns a list of { name, fn }), runs the cases named
-- in GASTOWND_TEST_CASES (comma-separated; all when unset) in order, prints one TAP line per
-- case on stdout and exits non-zero when one failed. The daemon-backed cases expect the
-- environment that tests/editors/ (pytest) sets up: GASTOWND_TEST_TOWN, _PYTHON and _CTL.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path

local function out(text)
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

local wanted, unknown = {}, {}
local filter = os.getenv("GASTOWND_TEST_CASES")
if filter and filter ~= "" then
  for name in filter:gmatch("[^,%s]+") do
    wanted[name] = true
    unknown[name] = true
  end
end

local cases = {}
local files = vim.fn.glob(here .. "test_*.lua", false, true)
table.sort(files)
for _, file in ipairs(files) do
  local ok, list = pcall(dofile, file)
  if not ok then
    out("not ok 0 - loading " .. file .. ": " .. tostring(list))
    vim.cmd("cquit 2")
  end
  for _, case in ipairs(list) do
    if next(wanted) == nil or wanted[case[1]] then
      cases[#cases + 1] = case
      unknown[case[1]] = nil
    end
  end
end
for name in pairs(unknown) do
  out("not ok 0 - no case named " .. name)
  vim.cmd("cquit 2")
end

local failed = 0
out("1.." .. #cases)
for i, case in ipairs(cases) do
  local started = vim.loop.hrtime()
  local ok, err = xpcall(case[2], debug.traceback)
  local ms = (vim.loop.hrtime() - started) / 1e6
  if ok then
    out(string.format("ok %d - %s (%.0f ms)", i, case[1], ms))
  else
    failed = failed + 1
    out(string.format("not ok %d - %s (%.0f ms)", i, case[1], ms))
    for line in tostring(err):gmatch("[^\n]+") do
      out("#   " .. line)
    end
  end
end
if failed > 0 then
  vim.cmd("cquit 1")
end
vim.cmd("qall!")
