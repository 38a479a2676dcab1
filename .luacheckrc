std = "max"
max_line_length = 110
files["spec"] = { std = "+busted" }
files["lua/csm/behaviors.lua"] = { unused_args = false }
