"""A trigger and a gate check from a package of their own, installed with real pip, used by name in
`retrain.yaml`: the trigger retrains in a real cycle and in a backtest, the check blocks promotion."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.adapters.registry import Registry

PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from mlflow_retrain.decide import GateCheck, Trigger, TriggerResult


@dataclass(frozen=True)
class Calendar(Trigger):
    """Retrain in the listed months of data time."""

    name: ClassVar[str] = "calendar"
    months: tuple = ()

    @classmethod
    def parse(cls, triggers, policy):
        if (t := triggers.sub(cls.name)) is None:
            return None
        months = t.get("months", list, required=True)
        t.done()
        if not all(isinstance(m, int) and 1 <= m <= 12 for m in months):
            raise t.fail("months", f"must list months 1..12, got {months!r}")
        return cls(tuple(months))

    def check(self, seen):
        month = seen.as_of.month
        fired = month in self.months
        return TriggerResult(fired, self.name, f"month {month} {'in' if fired else 'not in'} calendar "
                                               f"{list(self.months)}", {"month": month})


@dataclass(frozen=True)
class Veto(GateCheck):
    """Refuse every promotion, saying why (a change freeze)."""

    name: ClassVar[str] = "veto"
    why: str = ""

    @classmethod
    def parse(cls, checks, policy):
        if (t := checks.sub(cls.name)) is None:
            return None
        check = cls(t.get("why", str, required=True))
        t.done()
        return check

    def check(self, seen):
        return False, f"veto: {self.why} (candidate {seen.metric} {seen.candidate.metrics[seen.metric]:.4g}; fail)"
'''

SETUP_CFG = '''
[metadata]
name = calendar-plugin
version = 0.1

[options]
py_modules = calendar_plugin

[options.entry_points]
mlflow_retrain.triggers =
    calendar = calendar_plugin:Calendar
mlflow_retrain.gates =
    veto = calendar_plugin:Veto
'''

CALENDAR = {"calendar": {"months": [6]}, "metric_threshold": {"max": 1000}}  # the fixture's threshold, out of play
VETO = {"checks": {"veto": {"why": "change freeze"}}}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory):
    """The package built and installed by pip into a folder of its own, that folder on sys.path."""
    source = tmp_path_factory.mktemp("calendar-plugin")
    (source / "calendar_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (source / "setup.cfg").write_text(textwrap.dedent(SETUP_CFG))
    (source / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                           'build-backend = "setuptools.build_meta"\n')
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    assert list(target.glob("calendar_plugin-0.1.dist-info/entry_points.txt"))
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("calendar_plugin", None)


def test_plugin_options_are_checked_with_the_policy_file(plugin, write_policy):
    with pytest.raises(ConfigError, match=r"retrain.yaml: triggers.calendar.months must list months 1..12"):
        load_config(write_policy(triggers={"calendar": {"months": [13]}}))
    with pytest.raises(ConfigError, match=r"validation.checks.vetoo is not a known key \(installed gate checks: veto;"):
        load_config(write_policy(validation={"checks": {"vetoo": {}}}))
    with pytest.raises(ConfigError, match=r"installed triggers: calendar, data_drift, estimated_metric, max_age"):
        load_config(write_policy(triggers={"calender": {}}))


def test_a_plugin_trigger_retrains_in_a_cycle_and_a_plugin_check_blocks_promotion(plugin, prod_store, write_policy):
    config = load_config(write_policy(triggers=CALENDAR))
    quiet = run_cycle(config, as_of="2011-05-20", via="inprocess")
    assert quiet.outcome == "no_retrain" and quiet.reason.endswith("; month 5 not in calendar [6]")
    report = run_cycle(config, as_of="2011-06-15", via="inprocess")
    assert report.decision.fired == ["calendar"] and report.outcome in ("promoted", "rejected")
    version = Registry(config).get(report.candidate_version)
    assert version.tags[T.TRIGGER] == "calendar" and version.tags[T.REASON] == "month 6 in calendar [6]"
    assert MlflowClient().get_run(report.cycle_run_id).data.tags["triggers_fired"] == "calendar"

    vetoed = load_config(write_policy(triggers=CALENDAR, validation=VETO))
    blocked = run_cycle(vetoed, as_of="2011-06-29", via="inprocess")
    assert blocked.outcome == "rejected" and blocked.promotion.reasons[-1].startswith("veto: change freeze")
    rejected = Registry(vetoed).get(blocked.candidate_version)
    assert rejected.tags[T.DECISION] == T.REJECTED and "veto: change freeze" in rejected.tags[T.DECISION_REASON]
    assert Registry(vetoed).production().version == (report.candidate_version if report.outcome == "promoted"
                                                     else "1")


def test_a_plugin_trigger_and_check_decide_the_backtest(plugin, store, write_policy):
    every = timedelta(days=7)
    for validation, outcomes in (({}, None), (VETO, {T.REJECTED})):
        config = load_config(write_policy(triggers=CALENDAR, validation=validation))
        result = run_backtest(config, start="2011-04-30", end="2011-09-17", every=every,
                              policies=select(default_policies(config, every), ["configured"]))
        state = result.states[0]  # then the schedule of its budget
        assert state.retrains == 4 and [at[:7] for at, _ in state.retrain_points] == ["2011-06"] * 4
        if outcomes:
            assert {outcome for _, outcome in state.retrain_points} == outcomes and state.promoted == 0
