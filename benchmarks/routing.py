"""Prove the routing (issue #7): every routing policy on mixed traffic, simulated on the Spark pair
and live on the CPU stack; tables, charts and docs/routing.md's tables (tuner/policy_eval/ holds the
code, tuner/policy_eval/command.py the options).

    .venv/bin/python benchmarks/routing.py --simulated-only [--seeds 5]
    flock /tmp/tandem-heavy.lock .venv/bin/python benchmarks/routing.py --live-only [--quick] [--live-plan PLAN]
    flock /tmp/tandem-heavy.lock .venv/bin/python benchmarks/routing.py --docs     # everything
    .venv/bin/python benchmarks/routing.py --report-only --docs                    # tables and charts again
"""

from tuner.policy_eval.command import main

if __name__ == "__main__":
    raise SystemExit(main())
