"""Crash anywhere, converge next cycle, against a real `mlflow server`: every registry write is an
HTTP request and the lease rests on the server refusing a second create of the same name.

Each scenario is killed at the first point of every kind of registry write it makes (lease create
and sweep, register, version tag, model tag and untag, each stage move, alias set and drop,
release: `fault_harness.kinds`); on sqlite (test_faults*.py) every single write is. The copies of a
scenario run two at a time on the module's server (a model each), each pair from its store reset to
the state the scenario starts from (`server_states`: v1 trained over HTTP once for the module, not
once per copy)."""

from __future__ import annotations

from fault_harness import kinds
from faults_common import (
    BOOTSTRAP,
    CYCLE,
    DEGRADED,
    QUIET,
    kill_everywhere,
    probe_points,
    server_maker,
)

PROMOTION = "promotion over http"  # its points are listed once for both tests that need them


def test_a_kill_at_every_kind_of_write_of_a_promotion_over_http_converges(tmp_path, server, server_states,
                                                                           write_policy):
    promotion = server_maker(server.uri, server_states.models, write_policy, CYCLE, triggers=DEGRADED)
    n = kill_everywhere(tmp_path, promotion, pick=kinds, remember=PROMOTION, restore=server_states.bootstrapped)
    assert n >= 12


def test_a_kill_at_every_kind_of_write_of_a_rejection_and_a_bootstrap_over_http_converges(tmp_path, server,
                                                                                        server_states, write_policy):
    models = server_states.models
    promotion = kinds(probe_points(tmp_path, server_maker(server.uri, models, write_policy, CYCLE, triggers=DEGRADED),
                                   remember=PROMOTION, restore=server_states.bootstrapped))
    rejected = kill_everywhere(tmp_path / "rejection", server_maker(
        server.uri, models, write_policy, CYCLE, triggers=DEGRADED, validation={"max_metric": 10}),
        skip=promotion, pick=kinds, restore=server_states.bootstrapped)
    assert rejected >= 3
    booted = kill_everywhere(tmp_path / "bootstrap", server_maker(server.uri, models, write_policy, BOOTSTRAP),
                             pick=kinds, restore=server_states.clean)
    assert booted >= 8


def test_a_kill_during_a_lease_takeover_over_http_converges(tmp_path, server, server_states, write_policy):
    takeover = server_maker(server.uri, server_states.models, write_policy, CYCLE, "expired_lease", triggers=QUIET)
    n = kill_everywhere(tmp_path, takeover, restore=server_states.bootstrapped)
    assert n >= 4
