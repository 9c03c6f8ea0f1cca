-- wrk script for ./scripts/bench release: each wrk thread is one reading institution (its bearer token),
-- its connections that institution's terminals; requests cycle through the record ids.
-- Called as: wrk -t T -c C -d S -s bench/release.lua URL -- <plan file>
local tokens, records = {}, {}
local thread_count = 0

local function read_plan(path)
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    local kind, value = line:match("^(%a+) (.+)$")
    if kind == "token" then table.insert(tokens, value) elseif kind == "record" then table.insert(records, value) end
  end
  f:close()
end

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  read_plan(args[1])
  token = tokens[(id % #tokens) + 1]
  counter = id * 7
  ok = 0
end

function request()
  counter = counter + 1
  local rid = records[(counter % #records) + 1]
  return wrk.format("GET", "/v1/records/" .. rid .. "?purpose=treatment", { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d,' ..
    ' "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
