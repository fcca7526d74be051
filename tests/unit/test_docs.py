"""The documentation cannot drift from the code: the policy reference lists exactly the keys the parser
accepts, and the README stays a front page whose links lead somewhere."""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_retrain.policy.config import TRIGGER_SETTINGS
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.decide import plugins
from mlflow_retrain.base.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gen_policy", ROOT / "docs" / "gen_policy.py")
gen_policy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_policy)

# sections whose keys are names, not a fixed set: trigger plugins, gate check plugins, column names
NAMED = {"triggers", "validation.checks", "monitoring.drift.columns"}


def _at(policy: dict[str, Any], section: str) -> dict[str, Any]:
    """The mapping of `policy` a reference section names (`notify[]` the first target, `<column>` the first)."""
    node: Any = policy
    for part in section.split(".") if section else []:
        if part == "notify[]":
            node = node["notify"][0]
        elif part == "<column>":
            node = next(iter(node.values()))
        else:
            node = node[part]
    return node


def _accepted(section: str) -> set[str]:
    """What the parser itself says it knows in `section`, from the error an unknown key there gets."""
    policy = copy.deepcopy(gen_policy.FULL_POLICY)
    _at(policy, section)["zz_not_a_key"] = 1
    with pytest.raises(ConfigError) as caught:
        parse_config(policy, "p.yaml")
    listed = re.search(r"known(?: here)?: ([^)]*)\)", str(caught.value))
    assert listed, f"{section}: {caught.value}"
    return set(listed.group(1).split(", "))


def test_the_policy_reference_lists_every_key_the_parser_accepts_and_describes_each():
    reference = gen_policy.reference()
    for section, keys in reference.items():
        if section not in NAMED:
            assert set(keys) == _accepted(section), section
        for key, (kind, _) in keys.items():  # every mapping of fixed keys has its own table
            name = f"{section}.{key}" if section else key
            if kind == "a section" and name != "validation.checks":
                assert name in reference, name
    # every built-in trigger and the triggers' settings, whatever the parser reads before it
    assert set(reference["triggers"]) == set(plugins.builtin_triggers()) | set(TRIGGER_SETTINGS)
    assert {"url", "url_env", "url_file", "secret_env", "timeout"} <= set(reference["notify[]"])
    rendered = gen_policy.render()  # raises on a key without a description, or a description of no key
    assert "| `approval_ttl` | a span |" in rendered and "| `model_name` | a string | required |" in rendered
    assert "`keep` \\| `drop`" in rendered  # a | inside a cell does not split it


def test_a_key_without_a_description_fails_the_build(monkeypatch):
    monkeypatch.delitem(gen_policy.DESCRIPTIONS, "registry.lease_ttl")
    with pytest.raises(ValueError, match="no description for policy key.*registry.lease_ttl"):
        gen_policy.render()
    monkeypatch.setitem(gen_policy.DESCRIPTIONS, "registry.lease_ttl", "x")
    monkeypatch.setitem(gen_policy.DESCRIPTIONS, "registry.gone", "x")
    with pytest.raises(ValueError, match="the parser does not read: registry.gone"):
        gen_policy.render()


def test_the_readme_is_a_front_page_whose_links_resolve_and_every_page_is_in_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 10 * 1024
    links = re.findall(r"\]\(([^)#\s]+)", readme)
    local = [link for link in links if "://" not in link]
    assert "docs/index.md" in local and any(link.endswith(".png") for link in local)
    assert [link for link in local if not (ROOT / link).is_file()] == []
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert site["docs_dir"] == "docs" and site["strict"] is True
    listed = set(re.findall(r"([\w-]+\.md)", str(site["nav"])))
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}
