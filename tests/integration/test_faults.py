"""Crash anywhere, converge next cycle (1/2): a real SIGKILL at every registry write of a promotion
and of a lease takeover, each followed by the next normal cycle.

The fault points are not listed by hand: each scenario first runs once with
`MLFLOW_RETRAIN_FAULT_LOG` to learn every point its cycle passes, then is killed at each in turn
(on a fresh copy of the store), and the next cycle, started at once (the dead cycle's lease is freed:
its holder is provably gone), must leave the registry converged (`fault_harness.assert_converged`).
"""

from __future__ import annotations

from faults_common import CYCLE, DEGRADED, QUIET, kill_everywhere, maker


def test_a_kill_at_every_write_of_a_promotion_converges(tmp_path, bootstrapped_template, write_policy, store):
    n = kill_everywhere(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED))
    assert n >= 18  # lease (2), register, stage the candidate (4), promote (10: intent, tags, stage, alias...), release


def test_a_kill_during_a_lease_takeover_converges(tmp_path, bootstrapped_template, write_policy, store):
    # the cycle finds the lease of a cycle that died (expired, never released) and takes it over
    n = kill_everywhere(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, "expired_lease", triggers=QUIET))
    assert n >= 4

