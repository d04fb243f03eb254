"""Policy files: the shipped ones load and the Guard accepts them; every bad file gives one error naming file,
line and field."""

from __future__ import annotations

import pytest
from guard_helpers import embedded_scorer

from guardrail.backends.scripted import ScriptedBackend
from guardrail.errors import ConfigError
from guardrail.guard import Guard, PolicyError, load_policy, parse_policy, shipped_policies

REQUIRED = {"default", "strict", "shadow", "prompt-screen", "agent-self-check"}

GOOD = """\
name: t
prompt:
  baseline: general
  tiers:
    - {p: 0.01, action: annotate}
    - {p: 0.001, action: reject}
output:
  baseline: general
  tiers:
    - {p: 0.01, action: regenerate}
"""


def test_shipped_policies_load_and_build_a_guard():
    names = set(shipped_policies())
    assert REQUIRED <= names
    backend = ScriptedBackend(scorer=embedded_scorer())
    for name in names:
        pol = load_policy(name)
        assert pol.name == name
        guard = Guard(pol, backend)  # resolves baselines, checks tiers against their resolution
        assert set(guard.baselines) == set(pol.sides())
        assert all(kind == "serving" for kind, _ in guard._judge_by.values())


def test_tiers_sorted_and_hash_ignores_comments():
    a = parse_policy(GOOD, "a.yaml")
    b = parse_policy("# a comment\n" + GOOD, "b.yaml")
    assert [t.p for t in a.prompt.tiers] == [0.001, 0.01]
    assert a.hash == b.hash
    assert a.where("prompt", "tiers", 1, "p") == "a.yaml:6"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (GOOD.replace("  baseline: general\n  tiers:", "  baseline: general\n  colour: red\n  tiers:", 1), 4,
         "prompt.colour: unknown key"),
        (GOOD.replace("action: annotate", "action: shout"), 5, "prompt.tiers.0.action"),
        (GOOD.replace("p: 0.001", "p: 1.5"), 6, "prompt.tiers.1.p"),
        (GOOD.replace("p: 0.001", "p: 0.01"), 4, "same p"),
        (GOOD + "regenerate:\n  ladder:\n    - {top_p: 0.9}\n", 11, "first rung"),
        (GOOD.replace("p: 0.001, action: reject", "p: 0.001, action: regenerate"), 1, "outputs only"),
        (GOOD.replace("name: t", "name: t\n  bad: [indent"), 2, "malformed YAML"),
        (GOOD.replace("baseline: general", "baseline: ../etc/x.json", 1), 3, "never a path"),
        (GOOD + "output:\n  enabled: false\n", 11, "output: key given twice"),  # YAML would keep the last
        (GOOD.replace("  baseline: general\n  tiers:", "  baseline: general\n  baseline: code_python\n  tiers:", 1),
         4, "prompt.baseline: key given twice"),
    ],
)
def test_bad_policy_names_file_line_field(text, line, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "bad.yaml")
    msg = str(e.value)
    assert msg.startswith(f"bad.yaml:{line}:"), msg
    assert needle in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_unknown_baseline_and_tier_below_resolution_refused_at_guard_build():
    backend = ScriptedBackend(scorer=embedded_scorer())
    pol = parse_policy(GOOD.replace("baseline: general", "baseline: nosuch", 1), "p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml:3: prompt\.baseline: no baseline 'nosuch'"):
        Guard(pol, backend)
    # the output baseline's resolution is ~0.0086: a tier at 0.001 can never fire
    pol = parse_policy(GOOD.replace("{p: 0.01, action: regenerate}", "{p: 0.001, action: regenerate}"), "q.yaml")
    with pytest.raises(ConfigError, match=r"q\.yaml:10: output\.tiers\.0\.p: .*below the resolution"):
        Guard(pol, backend)
    # ... unless the tier says it ranks by the tail statistic
    pol = parse_policy(GOOD.replace("{p: 0.01, action: regenerate}", "{p: 0.001, action: regenerate, tail: true}"))
    assert Guard(pol, backend).baselines["output"].resolution > 0.001


def test_scorer_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="neither the serving backend nor the scorer"):
        Guard(parse_policy(GOOD), ScriptedBackend())


def test_unknown_policy_name_and_unreadable_file(tmp_path):
    with pytest.raises(PolicyError, match="no policy 'nope'; shipped: "):
        load_policy("nope")
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="a policy is a YAML mapping"):
        load_policy(tmp_path / "list.yaml")
