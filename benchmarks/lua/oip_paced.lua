-- wrk script: oip.lua's requests with a pause of 2 ms before each (wrk's delay()), so that
-- work a request leaves behind in the server (a rollout's shadow copy) is done before the
-- next one arrives. Usage: as oip.lua.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "oip.lua")

function delay()
  return 2
end
