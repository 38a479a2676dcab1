std = "max"
max_line_length = 110
self = false                -- providers are methods; self often goes unused
ignore = { "581" }          -- 'not (x >= y)' is deliberate: it also rejects NaN
files["spec"] = { std = "+busted" }
files["lua/csm/behaviors.lua"] = { unused_args = false }
