-- wrk script for Open Inference Protocol requests (KServe v2 REST).
--
-- Usage: wrk ... -s oip.lua URL -- PATH HEADER_FILE [RAW_FILE]
--   PATH         request path, e.g. /v2/models/iris/infer
--   HEADER_FILE  the JSON request document (with "data" for a JSON request; with
--                "parameters": {"binary_data_size": N} per input for a binary request)
--   RAW_FILE     optional: raw little-endian tensor bytes. When given, the body is
--                HEADER .. RAW and Inference-Header-Content-Length is #HEADER (Triton's
--                binary tensor extension); otherwise the body is the JSON document alone.
-- done() prints one line `BENCHJSON {...}` with the counts by HTTP status, the latency
-- percentiles (microseconds) and the first response body seen, for the harness to parse.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function slurp(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local path, header_file, raw_file = args[1], args[2], args[3]
  local header = slurp(header_file)
  local headers = {}
  local body
  if raw_file ~= nil and raw_file ~= "" then
    local raw = slurp(raw_file)
    body = header .. raw
    headers["Content-Type"] = "application/octet-stream"
    headers["Inference-Header-Content-Length"] = tostring(#header)
  else
    body = header
    headers["Content-Type"] = "application/json"
  end
  req = wrk.format("POST", path, headers, body)
  statuses = {}
  sample = ""
end

function request()
  return req
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if sample == "" and status == 200 then
    sample = string.sub(body or "", 1, 300)
  end
end

local function escape(s)
  s = string.gsub(s, '\\', '\\\\')
  s = string.gsub(s, '"', '\\"')
  s = string.gsub(s, '[%c]', ' ')
  return s
end

function done(summary, latency, requests)
  local total = {}
  local first = ""
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for k, v in pairs(counts) do
      total[k] = (total[k] or 0) + v
    end
    local s = thread:get("sample") or ""
    if first == "" then first = s end
  end
  local parts = {}
  for k, v in pairs(total) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  local pct = {}
  for _, p in ipairs({50, 90, 99}) do
    table.insert(pct, string.format('"%d":%d', p, latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"statuses":{%s},"latency_us":{%s},'
      .. '"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"sample":"%s"}\n',
    summary.requests, summary.duration, table.concat(parts, ","), table.concat(pct, ","),
    latency.mean, e.connect, e.read, e.write, e.timeout, escape(first)))
end
