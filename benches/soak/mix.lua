-- wrk script of benches/soak/run.sh: a mix of reads and writes on one precond route, every
-- answer checked against what its kind of request should get.
--
--   wrk -tN -cN -d D -s mix.lua URL -- ROUTE PREFIX ITEMS COUNTS_DIR
--
-- ROUTE: guard or enforce; PREFIX: the route's path prefix (/g, /e); ITEMS: resources
-- PREFIX/items/1..ITEMS that everyone reads and writes; COUNTS_DIR: where each thread writes its
-- cumulative counts once a second (and done() at the end), ROUTE-THREAD.counts, one line per
-- (kind, status): "ROUTE/KIND STATUS CLASS COUNT"; the first 20 unexpected answers of each thread
-- go to COUNTS_DIR/unexpected-ROUTE-THREAD.txt (time, kind, status, the body's start).
--
-- Run it with as many threads as connections (-tN -cN): one connection per thread, so each
-- answer is the answer to the request this thread sent last (no pipelining).
--
-- Kinds, in a fixed cycle per connection, each on a random item:
--   read       GET PREFIX/items/i
--   match-get  GET PREFIX/items/i, then
--   match-put  PUT PREFIX/items/i with If-Match: "v1", the tag the GET showed (current)
--   stale      PUT PREFIX/items/i with If-Match: "v0" (a tag that is not current)
--   new        PUT PREFIX/new/<thread>-<n> with If-None-Match: * (a resource that does not exist)
--   plain      PUT PREFIX/items/i without any precondition
-- Expected answers (anything else is "unexpected"):
--   guard:   read, match-get 200; match-put 200/204; stale 412 (at the edge, or from the origin,
--            which checks If-Match); new 201; plain 200/204
--   enforce: read, match-get 200; match-put 200/204; stale 412; new 201; plain 428 (PUT must be
--            conditional); a 503 whose body says write-busy (write_wait elapsed while another
--            write held the resource's lock, e.g. a trickled upload) on a write that takes the
--            lock (match-put, stale, new): class "busy", counted apart

local nthreads = 0
local threads = {}

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

-- globals, read back by done() through thread:get
route, dir = nil, nil
local prefix, items
local cycle = { "read", "match-get", "match-put", "read", "stale", "read", "new", "plain" }
local step, item, created = 0, 1, 0
local pending
counts = {}
local last_flush = 0
local noted = 0

local BODY = '{"name":"widget","stock":9}'
local JSON = { ["Content-Type"] = "application/json" }

local expect = {
  guard = {
    ["read"] = { [200] = "ok" },
    ["match-get"] = { [200] = "ok" },
    ["match-put"] = { [200] = "ok", [204] = "ok" },
    ["stale"] = { [412] = "expected_refusals" },
    ["new"] = { [201] = "ok" },
    ["plain"] = { [200] = "ok", [204] = "ok" },
  },
  enforce = {
    ["read"] = { [200] = "ok" },
    ["match-get"] = { [200] = "ok" },
    ["match-put"] = { [200] = "ok", [204] = "ok", [503] = "busy" },
    ["stale"] = { [412] = "expected_refusals", [503] = "busy" },
    ["new"] = { [201] = "ok", [503] = "busy" },
    ["plain"] = { [428] = "expected_refusals" },
  },
}

function init(args)
  route = args[1]
  prefix = args[2]
  items = tonumber(args[3])
  dir = args[4]
  math.randomseed(tid * 7919 + os.time())
end

local function headers(extra)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(extra) do
    h[k] = v
  end
  return h
end

function request()
  step = step % #cycle + 1
  pending = cycle[step]
  if pending ~= "match-put" then
    item = math.random(items)
  end
  local path = prefix .. "/items/" .. item
  if pending == "read" or pending == "match-get" then
    return wrk.format("GET", path)
  elseif pending == "match-put" then
    return wrk.format("PUT", path, headers({ ["If-Match"] = '"v1"' }), BODY)
  elseif pending == "stale" then
    return wrk.format("PUT", path, headers({ ["If-Match"] = '"v0"' }), BODY)
  elseif pending == "new" then
    created = created + 1
    return wrk.format("PUT", prefix .. "/new/" .. tid .. "-" .. created,
      headers({ ["If-None-Match"] = "*" }), BODY)
  else
    return wrk.format("PUT", path, JSON, BODY)
  end
end

local function write_counts(path, c)
  local tmp = path .. ".tmp"
  local f = io.open(tmp, "w")
  if not f then
    return
  end
  for k, n in pairs(c) do
    f:write(k, " ", n, "\n")
  end
  f:close()
  os.rename(tmp, path)
end

function response(status, hdrs, body)
  local kind = pending or "?"
  local cls = (expect[route][kind] or {})[status] or "unexpected"
  if cls == "busy" and not (body and body:find("write-busy", 1, true)) then
    cls = "unexpected"
  end
  if cls == "unexpected" and noted < 20 then
    -- keep the first few for the report: what came back, and its start
    noted = noted + 1
    local f = io.open(dir .. "/unexpected-" .. route .. "-" .. tid .. ".txt", "a")
    if f then
      local text = (body or ""):sub(1, 300):gsub("[\r\n]+", " ")
      f:write(os.date("!%H:%M:%S"), " ", route, "/", kind, " ", status, " ", text, "\n")
      f:close()
    end
  end
  local key = route .. "/" .. kind .. " " .. status .. " " .. cls
  counts[key] = (counts[key] or 0) + 1
  local now = os.time()
  if now ~= last_flush then
    last_flush = now
    write_counts(dir .. "/" .. route .. "-" .. tid .. ".counts", counts)
  end
end

function done(summary, latency, requests)
  -- the threads' final counts (their last flush may be up to a second old)
  for i, t in ipairs(threads) do
    local c = t:get("counts")
    local r = t:get("route")
    local id = t:get("tid")
    if c and r and id then
      write_counts(t:get("dir") .. "/" .. r .. "-" .. id .. ".counts", c)
    end
  end
end
