"""Baselines by name: the user's own directories (registry.add_dir, GUARDRAIL_BASELINES) beside the shipped
ones, and a name that happens to be a directory here."""

from __future__ import annotations

import shutil

import pytest

from guardrail.baselines import registry
from guardrail.baselines.model import BaselineError


def test_user_directory_baselines_resolve_by_name(tmp_path, monkeypatch):
    src = registry.shipped()[("general", "prompt")]
    shutil.copy(src, tmp_path / "mine.prompt.json")
    with pytest.raises(BaselineError, match="no baseline 'mine'"):
        registry.resolve("mine", "prompt")
    monkeypatch.setenv("GUARDRAIL_BASELINES", str(tmp_path))
    assert registry.resolve("mine", "prompt").domain == "general"  # the file's own content
    monkeypatch.delenv("GUARDRAIL_BASELINES")
    monkeypatch.setattr(registry, "_extra_dirs", [])
    registry.add_dir(tmp_path)
    assert ("mine", "prompt") in registry.shipped()
    with pytest.raises(BaselineError, match="not a directory"):
        registry.add_dir(tmp_path / "nope")


def test_a_name_that_is_also_a_directory_here_is_still_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "general").mkdir()
    assert registry.resolve("general", "prompt").side == "prompt"
