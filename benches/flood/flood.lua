-- wrk script of benches/flood/run.sh: GETs to distinct resources, one new key per request.
--
--   wrk -t T -c C -d MAX -s flood.lua URL -- MODE KEYS LEN THREADS DONE_DIR
--
-- MODE short: paths /k/<thread>/<counter, zero-padded so that the path is LEN bytes long>.
-- MODE long:  /q?i=<thread>-<counter>&pad=aaa... , LEN bytes in all (a query string longer than
--             store.max_key_bytes: precond must forward it and never learn it).
-- KEYS: distinct keys in all, shared out between the THREADS wrk threads (0: no limit; wrk's -d
-- ends the run). A thread that has had its share answered writes DONE_DIR/done.<thread> and stops;
-- run.sh stops wrk once every thread has. Requests a thread sends after its share (one per
-- connection at most, while the last answers arrive) repeat its last key: no extra distinct key.
-- run.sh makes sure KEYS >= THREADS.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

local mode, quota, len, done_dir
local sent, answered = 0, 0
local prefix, pad_to, last

local function target(i)
  if mode == "short" then
    local digits = tostring(i)
    local fill = pad_to - #prefix - #digits
    if fill > 0 then
      return prefix .. string.rep("0", fill) .. digits
    end
    return prefix .. digits
  end
  local head = prefix .. i .. "&pad="
  local fill = pad_to - #head
  if fill > 0 then
    return head .. string.rep("a", fill)
  end
  return head
end

function init(args)
  mode = args[1] or "short"
  local keys = tonumber(args[2] or "0")
  len = tonumber(args[3] or "32")
  local threads = tonumber(args[4] or "1")
  done_dir = args[5]
  -- this thread's share of KEYS (0: unbounded)
  if keys > 0 then
    quota = math.floor(keys / threads)
    if tid <= keys % threads then
      quota = quota + 1
    end
  else
    quota = 0
  end
  if mode == "short" then
    prefix = "/k/" .. tid .. "/"
  else
    prefix = "/q?i=" .. tid .. "-"
  end
  pad_to = len
  last = target(1)
end

function request()
  if quota == 0 or sent < quota then
    sent = sent + 1
    last = target(sent)
  end
  return wrk.format("GET", last)
end

function response(status, headers, body)
  answered = answered + 1
  if quota > 0 and answered == quota then
    if done_dir then
      local f = io.open(done_dir .. "/done." .. tid, "w")
      if f then
        f:write(answered, "\n")
        f:close()
      end
    end
    wrk.thread:stop()
  end
end
