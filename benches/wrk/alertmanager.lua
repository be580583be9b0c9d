-- wrk script: Alertmanager v4 webhooks of unique alerts against incidentd
-- (POST /api/v1/alerts/alertmanager), an independent load generator beside examples/load.rs.
--
--   WRK_ALERTS=100 wrk -t2 -c8 -d20s -s benches/wrk/alertmanager.lua http://127.0.0.1:8080
--
-- WRK_ALERTS is the number of alerts per request (default 100). Every alert has a name of
-- its own (thread, request, index, in letters so that no digits read as status words), so
-- each opens an incident: the storm that costs the most. WRK_GROUPS=N spreads the alerts over
-- N groups instead (one incident per group). WRK_STOP_AFTER=N stops each thread after N
-- answered requests (so a storm has a fixed size: threads × N × WRK_ALERTS alerts, plus those
-- in flight on the thread's connections when it stops).

per = tonumber(os.getenv("WRK_ALERTS") or "100")
groups = tonumber(os.getenv("WRK_GROUPS") or "0")
if groups == 0 then groups = nil end
stop_after = tonumber(os.getenv("WRK_STOP_AFTER") or "0")

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local function letters(n)
  local s = ""
  repeat
    s = string.char(97 + n % 26) .. s
    n = math.floor(n / 26)
  until n == 0
  return s
end

function init(args)
  seq = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  seq = seq + 1
  local alerts = {}
  for i = 1, per do
    local name
    local pod = letters(id) .. letters(seq) .. letters(i)
    if groups then
      name = "Storm" .. letters((seq * per + i) % groups)
    else
      name = "Unique" .. pod
    end
    alerts[i] = string.format(
      '{"status":"firing","labels":{"alertname":"%s","service":"svc%s","pod":"pod%s","severity":"warning"},' ..
      '"annotations":{"summary":"%s on %s"},"startsAt":"2026-12-07T06:00:00Z","endsAt":"0001-01-01T00:00:00Z",' ..
      '"generatorURL":"http://prometheus:9090/graph","fingerprint":"%s"}',
      name, letters(id), pod, name, pod, letters(id) .. "x" .. pod)
  end
  local body = '{"version":"4","groupKey":"{}:{}","truncatedAlerts":0,"status":"firing","receiver":"incidentd",' ..
    '"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://alertmanager:9093","alerts":[' ..
    table.concat(alerts, ",") .. ']}'
  return wrk.format(nil, "/api/v1/alerts/alertmanager", nil, body)
end

answered = 0

function response(status, headers, body)
  answered = answered + 1
  if stop_after > 0 and answered >= stop_after then
    local dir = os.getenv("WRK_DONE_DIR")
    if dir and not reported then
      reported = true
      local f = io.open(dir .. "/" .. id, "w")
      if f then f:close() end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local alerts = summary.requests * per
  io.write(string.format("alerts/s %.0f  requests %d  non-2xx %d  p50 %.1f ms  p99 %.1f ms\n",
    alerts / (summary.duration / 1e6), summary.requests, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
