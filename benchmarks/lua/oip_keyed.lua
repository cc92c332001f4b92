-- wrk script: oip.lua's requests, each with an `x-user-id` header that cycles through
-- 1000 users (user-0 .. user-999), for rollouts with `route_key: header:x-user-id`.
--
-- Usage: as oip.lua (wrk ... -s oip_keyed.lua URL -- PATH HEADER_FILE [RAW_FILE]); the
-- requests are built once in init, so the per-request cost is oip.lua's plus a counter.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "oip.lua")

local USERS = 1000
local plain_init = init
local keyed = {}
local next_user = 0

function init(args)
  plain_init(args)
  for i = 1, USERS do
    -- After the request line: "POST /path HTTP/1.1\r\n" + our header + wrk's headers.
    keyed[i] = string.gsub(req, "\r\n", "\r\nx-user-id: user-" .. (i - 1) .. "\r\n", 1)
  end
end

function request()
  next_user = next_user % USERS + 1
  return keyed[next_user]
end
