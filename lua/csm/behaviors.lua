--- The built-in state behaviours, ports of the original (Go) machine's.
-- Each is `function(sm, ctx, data)`, run as a coroutine when its state is
-- entered (`data` is the active state at that moment), and uses only the
-- machine's public methods, so any of them can be copied and changed.
--
-- A provider error is traced ("error encountered in <state>") and handled as
-- the original handles it, mostly with induce_sync. After any call that may
-- yield, a behaviour whose state has been left returns at once.
-- @module csm.behaviors

local behaviors = {}
local _ -- discarded results

local function now(sm)
  return sm:loop():now()
end

local function remaining(sm, deadline)
  local left = deadline - now(sm)
  return left > 0 and left or 0
end

-- Whether a store was refused because peers filled the map (code "full"):
-- the machine's own entry then goes unrecorded (traced), since inducing a
-- sync would lead straight back here at the same instant, for ever.
local function map_full(sm, err, code)
  if code == "full" then
    sm:trace_error("own entry not recorded", err)
    return true
  end
  return false
end

-- Traces err and induces a sync, as the original does on most provider errors.
local function induce_sync(sm, ctx, err, message)
  sm:trace_error(message or ("error encountered in " .. sm:state()), err)
  ctx:send_event("induce_sync")
end

local function contains(peers, id)
  local identity = id:identity()
  for _, p in ipairs(peers) do
    if p == identity or (type(p) ~= "string" and p:identity() == identity) then return true end
  end
  return false
end

-- The leaders for prior: a non-empty list, or nil, err.
local function leaders_for(sm, ctx, prior)
  if prior == nil then return nil, "no active state" end
  local leaders, err = sm:call(ctx, "leader", "get_next_leaders", prior)
  if leaders == nil then return nil, err end
  if #leaders == 0 then return nil, "empty leader list" end
  return leaders
end

-- The rank being decided: the active state's + 1, or nil, err.
local function next_rank(sm)
  local active = sm:active_state()
  if active == nil then return nil, "no active state" end
  return active:rank() + 1
end

--- loading: synchronize, then wait to be among the next leaders, re-syncing
-- every sync_retry seconds.
function behaviors.loading(sm, ctx, data)
  if sm:provider("sync") == nil then return end
  local function retry(err)
    if err ~= nil then sm:trace_error("error encountered in loading", err) end
    if ctx:sleep(sm:timing("sync_retry")) then ctx:send_event("sync_timeout") end
  end
  local synced, err = sm:call(ctx, "sync", "synchronize", sm:active_state())
  if ctx:cancelled() then return end
  if err ~= nil then return retry(err) end
  if synced ~= nil then sm:set_active_state(synced) end
  local leaders
  leaders, err = leaders_for(sm, ctx, sm:active_state())
  if ctx:cancelled() then return end
  if leaders == nil then return retry(err) end
  if contains(leaders, sm:id()) then
    ctx:send_event("sync_complete")
  else
    retry()
  end
end

--- collecting: collect, learn the next leaders, announce liveness.
function behaviors.collecting(sm, ctx, data)
  local collected, err = sm:call(ctx, "liveness", "collect")
  if ctx:cancelled() then return end
  if collected == nil then return induce_sync(sm, ctx, err) end
  sm:set_next_provers({})
  sm:set_chosen_proposer(nil)
  sm:set_collected(collected)
  local leaders
  leaders, err = leaders_for(sm, ctx, data)
  if ctx:cancelled() then return end
  if leaders == nil then return induce_sync(sm, ctx, err) end
  sm:set_next_provers(leaders)
  _, err = sm:call(ctx, "liveness", "send_liveness", data, collected)
  if ctx:cancelled() then return end
  if err ~= nil then return induce_sync(sm, ctx, err) end
  if sm:emit_on_send() then
    local ok, code
    ok, err, code = sm:store("liveness", collected:rank(), sm:id(), collected)
    if not ok and not map_full(sm, err, code) then return induce_sync(sm, ctx, err) end
    ctx:send_event("liveness_check_received")
  end
  ctx:send_event("collection_done")
end

--- liveness_check: wait until minimum_provers peers announced liveness for
-- the next rank, re-announcing every liveness_resend seconds.
function behaviors.liveness_check(sm, ctx, data)
  local minimum = sm:minimum_provers()
  if #sm:next_provers() < minimum then
    sm:trace("insufficient provers, re-fetching leaders")
    local leaders, err = leaders_for(sm, ctx, data)
    if ctx:cancelled() then return end
    if leaders == nil then return induce_sync(sm, ctx, err) end
    sm:set_next_provers(leaders)
  end
  local collected = sm:collected()
  if collected == nil then return induce_sync(sm, ctx, "nothing collected") end
  local rank, err = next_rank(sm)
  if rank == nil then return induce_sync(sm, ctx, err) end
  local interval = sm:timing("liveness_resend")
  local deadline = now(sm) + interval
  while true do
    local have = sm:count("liveness", rank)
    if have >= minimum then
      sm:trace("sufficient liveness checks, sending prover signal")
      ctx:send_event("prover_signal")
      return
    end
    sm:trace(string.format("insufficient liveness checks: need %d, have %d", minimum, have))
    local why = ctx:wait(remaining(sm, deadline))
    if why == nil then return end
    if why == "timeout" then
      deadline = deadline + interval
      _, err = sm:call(ctx, "liveness", "send_liveness", data, collected)
      if ctx:cancelled() then return end
      if err ~= nil then return induce_sync(sm, ctx, err) end
    end
  end
end

--- proving: prove the next state while watching for the leaders'
-- proposals; the top leader's ends the wait at once, the i-th leader's after
-- proving_grace + i - 1 polls.
function behaviors.proving(sm, ctx, data)
  local collected = sm:collected()
  sm:set_collected(nil)
  if collected == nil then
    ctx:send_event("induce_sync")
    return
  end
  local leaders, err = leaders_for(sm, ctx, data)
  if ctx:cancelled() then return end
  if leaders == nil then return induce_sync(sm, ctx, err, "could not obtain leaders") end
  local rank = data:rank() + 1
  local prover = ctx:spawn(function()
    return sm:call(ctx, "leader", "prove_next_state", data, collected)
  end)
  local poll, grace = sm:timing("proving_poll"), sm:timing("proving_grace")
  local checks, deadline = 0, now(sm) + poll
  while true do
    if prover:done() then
      local proposal
      proposal, err = prover:result()
      if ctx:cancelled() then return end
      if proposal == nil then return induce_sync(sm, ctx, err) end
      local ok, code
      ok, err, code = sm:store("proposals", proposal:rank(), sm:id(), proposal)
      if not ok and not map_full(sm, err, code) then return induce_sync(sm, ctx, err) end
      ctx:send_event("proof_complete")
      return
    end
    if sm:get("proposals", rank, leaders[1]) then
      ctx:send_event("publish_timeout")
      return
    end
    for i = 2, #leaders do
      if grace + i - 1 <= checks and sm:get("proposals", rank, leaders[i]) then
        ctx:send_event("publish_timeout")
        return
      end
    end
    local why = ctx:wait(remaining(sm, deadline))
    if why == nil then return end
    if why == "timeout" then
      checks = checks + 1
      deadline = deadline + poll
    end
  end
end

--- publishing: send this node's own proposal.
function behaviors.publishing(sm, ctx, data)
  if data == nil then return induce_sync(sm, ctx, "no active state") end
  local proposal = sm:get("proposals", data:rank() + 1, sm:id())
  if proposal == nil then return end
  local _, err = sm:call(ctx, "voting", "send_proposal", proposal)
  if ctx:cancelled() then return end
  if err ~= nil then return induce_sync(sm, ctx, err) end
  ctx:send_event("publish_complete")
end

--- voting: decide and send a vote once per round, then check for quorum as
-- votes arrive, re-sending the vote every vote_resend seconds.
function behaviors.voting(sm, ctx, data)
  local rank, err = next_rank(sm)
  if rank == nil then return induce_sync(sm, ctx, err) end
  local id = sm:id()
  if sm:chosen_proposer() == nil then
    local proposals = sm:proposals(rank)
    if next(proposals) == nil then
      sm:trace_error("no proposals to vote on", "no proposals")
      ctx:send_event("induce_sync")
      return
    end
    local peer, vote = sm:call(ctx, "voting", "decide_and_send_vote", proposals)
    if ctx:cancelled() then return end
    if peer == nil then return induce_sync(sm, ctx, vote) end
    sm:set_chosen_proposer(peer)
    if sm:emit_on_send() then
      local ok, code
      ok, err, code = sm:store("votes", rank, id, vote)
      if not ok and not map_full(sm, err, code) then return induce_sync(sm, ctx, err) end
    end
  end
  local interval = sm:timing("vote_resend")
  local deadline = now(sm) + interval
  local checked = -1 -- the vote count at the last check: other messages cannot make a quorum
  while true do
    local count = sm:count("votes", rank)
    if count ~= checked then
      checked = count
      local quorum
      quorum, err = sm:call(ctx, "voting", "is_quorum", sm:votes(rank))
      if ctx:cancelled() then return end
      if quorum == nil then return induce_sync(sm, ctx, err) end
      if quorum then
        sm:trace("quorum reached")
        ctx:send_event("quorum_reached")
        return
      end
    end
    local why = ctx:wait(remaining(sm, deadline))
    if why == nil then return end
    if why == "timeout" then
      checked = -1 -- and once per interval whatever arrived, as the original does
      deadline = deadline + interval
      local vote = sm:get("votes", rank, id)
      if vote == nil then
        sm:trace_error("no vote found", "prover has no vote")
        ctx:send_event("induce_sync")
        return
      end
      _, err = sm:call(ctx, "voting", "send_vote", vote)
      if ctx:cancelled() then return end
      if err ~= nil then return induce_sync(sm, ctx, err) end
      sm:trace(string.format("quorum not reached: votes: %d, needed: %d",
        sm:count("votes", rank), sm:minimum_provers()))
    end
  end
end

--- finalizing: fold the votes into the next state.
function behaviors.finalizing(sm, ctx, data)
  local rank, err = next_rank(sm)
  if rank == nil then return induce_sync(sm, ctx, err) end
  local finalized, detail = sm:call(ctx, "voting", "finalize_votes", sm:proposals(rank),
    sm:votes(rank))
  if ctx:cancelled() then return end
  if finalized == nil then return induce_sync(sm, ctx, detail or "no finalized state") end
  -- a round decides its own rank: a state of another would move the
  -- machine anywhere (a sync, not finalizing, adopts other ranks)
  if finalized:rank() ~= rank then
    return induce_sync(sm, ctx, string.format("finalize_votes returned a state of rank %d deciding rank %d",
      finalized:rank(), rank))
  end
  sm:set_next_state(finalized:clone())
  ctx:send_event("aggregation_done")
end

--- verifying: confirm the finalized state, adopt it and forget its rank.
function behaviors.verifying(sm, ctx, data)
  local rank, err = next_rank(sm)
  if rank == nil then return induce_sync(sm, ctx, err) end
  local finalized = sm:next_state()
  if finalized ~= nil and sm:get("confirmations", rank, sm:id()) == nil then
    _, err = sm:call(ctx, "voting", "send_confirmation", finalized)
    if ctx:cancelled() then return end
    if err ~= nil then return induce_sync(sm, ctx, err) end
  end
  finalized = sm:next_state()
  if finalized == nil then return end
  sm:set_active_state(finalized)
  sm:set_next_state(nil)
  sm:set_collected(nil)
  ctx:send_event("verification_done")
end

--- stopping: clean up at once.
function behaviors.stopping(sm, ctx, data)
  ctx:send_event("cleanup_complete")
end

return behaviors
