-- wrk script: GET <base path>/r/<i>, i cycling over 1000 resources (each thread on its own).
local i = 0
local base = ""
function init(args)
  base = wrk.path
end
function request()
  i = (i + 1) % 1000
  return wrk.format("GET", base .. "/r/" .. i)
end
