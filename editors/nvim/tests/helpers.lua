-- What the test cases share: waiting on the event loop, acting on the town, assertions.
local M = {}

M.town = os.getenv("GASTOWND_TEST_TOWN")

-- Every message the plugin gives, in order (vim.notify is the plugin's only channel).
M.messages = {}
vim.notify = function(message, level)
  M.messages[#M.messages + 1] = { message = message, level = level }
end

function M.clear_messages()
  M.messages = {}
end

function M.message_texts()
  local texts = {}
  for _, m in ipairs(M.messages) do
    texts[#texts + 1] = m.message
  end
  return texts
end

-- Wait, running the event loop, until check() is true; fail with `what` after timeout_ms.
function M.wait_for(what, check, timeout_ms)
  timeout_ms = timeout_ms or 5000
  local ok = vim.wait(timeout_ms, check, 10)
  if not ok then
    error(string.format("timed out after %d ms waiting for %s", timeout_ms, what), 2)
  end
end

function M.lines(buf)
  return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
end

M.find_buffer = require("gastownd.buffers").find

-- Lines of `buf` containing `text` (plain).
function M.matching(buf, text)
  local found = {}
  for _, line in ipairs(M.lines(buf)) do
    if line:find(text, 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

function M.count(buf, text)
  return #M.matching(buf, text)
end

function M.has(buf, text)
  return M.count(buf, text) > 0
end

-- Wait until a line of `buf` contains `text`.
function M.wait_for_text(what, buf, text, timeout_ms)
  M.wait_for(what, function()
    return M.has(buf, text)
  end, timeout_ms)
end

-- Wait for a message, give a second one time to arrive, expect exactly one; its text.
function M.one_message()
  M.wait_for("a message", function()
    return #M.messages > 0
  end)
  vim.wait(200)
  M.eq(1, #M.messages, "one message")
  return M.messages[1].message
end

-- Act on the town through tests/editors/townctl.py (the real gastownctl, hook and daemon).
-- Blocking on purpose: the test waits for the act to be done, the plugin's I/O waits with it.
function M.ctl(...)
  local python, ctl = os.getenv("GASTOWND_TEST_PYTHON"), os.getenv("GASTOWND_TEST_CTL")
  assert(python and ctl and M.town, "run through pytest (tests/editors): GASTOWND_TEST_* unset")
  local command = { python, ctl, "--town", M.town }
  vim.list_extend(command, { ... })
  local output = vim.fn.system(command)
  if vim.v.shell_error ~= 0 then
    error(string.format("townctl %s failed (%d): %s", table.concat({ ... }, " "), vim.v.shell_error, output), 2)
  end
  return output
end

function M.eq(expected, actual, what)
  if not vim.deep_equal(expected, actual) then
    error(
      string.format("%s: expected %s, got %s", what or "value", vim.inspect(expected), vim.inspect(actual)),
      2
    )
  end
end

function M.truthy(value, what)
  if not value then
    error((what or "value") .. " is not true", 2)
  end
  return value
end

function M.contains(list, text, what)
  for _, item in ipairs(list) do
    if tostring(item):find(text, 1, true) then
      return item
    end
  end
  error(string.format("%s: no entry contains %q in %s", what or "list", text, vim.inspect(list)), 2)
end

return M
