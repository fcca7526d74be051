"""Crash anywhere, converge next cycle (2/2): a real SIGKILL at every registry write of a rejection,
a bootstrap, and of the reconcile that repairs a half-done promotion (see test_faults.py)."""

from __future__ import annotations

import shutil

from fault_harness import kill, wait_for_expiry
from faults_common import BOOTSTRAP, CYCLE, DEGRADED, QUIET, kill_everywhere, maker, probe_points


def test_a_kill_at_every_write_of_a_rejection_converges(tmp_path, bootstrapped_template, write_policy, store):
    promotion = probe_points(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED))
    n = kill_everywhere(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED,
                                        validation={"max_metric": 10}), skip=promotion)
    assert n >= 5  # the rejection's own writes: the candidate archived with its verdict, release


def test_a_kill_at_every_write_of_a_bootstrap_converges(tmp_path, store_template, write_policy, store):
    n = kill_everywhere(tmp_path, maker(store_template, write_policy, BOOTSTRAP))
    assert n >= 10


def test_a_kill_at_every_write_of_a_reconcile_converges(tmp_path, bootstrapped_template, write_policy, store):
    """A promotion killed after the stage moved and before the alias did (the worst half-move); then
    the cycle that finds it, killed at each of its own writes (finishing the move, closing the dead
    cycle's runs, its reconcile run)."""
    wreck = maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED)(tmp_path / "wreck", 1)[0]
    kill(wreck, "alias production@1")
    wait_for_expiry()
    n = kill_everywhere(tmp_path, maker(wreck.folder / "mlflow.db", write_policy, CYCLE, triggers=QUIET))
    assert n >= 8
    shutil.rmtree(wreck.folder)
