"""Issue #7's routing evaluation: every policy on every mixed-traffic scenario, simulated on the
Spark pair (tuner.perfmodel.simulate) and live on the CPU stack (tuner.bench), and the report.

These are packages, not scripts, so the tests import them; benchmarks/routing.py runs `command`:
  command    the options, which earlier results a run replaces, the printed tables
  scenarios  what traffic each scenario sends, sized from a plan's replicas
  simulated  the simulated grid (policies x scenarios x seeds) with confidence intervals
  live       one CPU stack, the policy switched through PUT /admin/routing between runs
  report     the shared result model, targets, tables, plots and docs/routing.md's tables
"""
