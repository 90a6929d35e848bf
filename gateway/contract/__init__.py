"""The contract: the plan and settings types, and every rule the gateway applies, as pure functions.

Nothing in this package reads a clock, the network or a process (tests/test_layers.py checks it):
its functions take the time and the load as arguments, so the gateway calls them with live numbers
and the perf model's traffic simulation (tuner/perfmodel/simulate.py) with simulated ones, and the
two cannot drift apart. A rule and the module that runs it live share a name:

  gateway.contract.<rule>   pure: state in, state out        gateway.<rule>   live: event loop, I/O
  admission                 admit(): run, queue or reject     admission        ClassGate waits in the queue
  yielding                  batch_yield(), batch_limits()     yielding         BatchYielding re-arms its timer
  freezing                  arbitrate(): which engines freeze freezing         Freezer pauses and resumes engines
  router                    route(), POLICIES                 router           Router feeds it the load board
  timers                    hold_step(), hold_next_change()   timers           ReevaluationTimer on the loop

The rest has no live twin: config and batch_settings (the settings' types), classify (interactive
or batch), policy and policies/ (the routing-policy protocol and one module per policy),
routing_rules (the replica-level routing settings a plan implies), percentiles.
"""
