"""``baseline: route``: the domain router picks each text's baseline (scripted backend claiming the embedded
scorer's identity, the real shipped router and baselines), tiers checked against every routed baseline at load,
the report naming the route; and the same on the real embedded model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from guard_helpers import benign, embedded_scorer, generation

from guardrail.backends.scripted import ScriptedBackend
from guardrail.baselines.registry import resolve
from guardrail.errors import ConfigError
from guardrail.guard import Guard
from guardrail.guard.policy import parse_policy

CODE = ("def add(a, b):\n    return a + b\n\nWhy does this Python function raise a TypeError when I pass a list "
        "and an int?")
MEDICAL = ("I have had a persistent headache and blurred vision for three days. Should I see a doctor about these "
           "symptoms?")
VAGUE = "hello there"
ROUTED = """name: routed
prompt:
  baseline: route
  tiers: [{p: 0.01, action: annotate}]
output:
  baseline: route
  tiers: [{p: 0.05, action: annotate}]
regenerate: {max_attempts: 0}
"""


def make(policy: str = ROUTED, script=()) -> tuple[Guard, ScriptedBackend]:
    backend = ScriptedBackend(script, scorer=embedded_scorer())
    return Guard(parse_policy(policy, "routed.yaml"), backend, output_regimes=[]), backend


def test_each_message_is_judged_by_its_domain_baseline_and_the_report_names_the_route():
    guard, _ = make(script=[benign(), benign(seed=1), benign(seed=2), generation(benign(40, seed=3))])
    msgs = [{"role": "user", "content": CODE}, {"role": "user", "content": MEDICAL}, {"role": "user", "content": VAGUE}]
    r = asyncio.run(guard.chat(msgs, request_id="route-1")).report
    assert r.baselines == {"prompt": "route", "output": "route"}
    got = {v.message: (v.route.domain, v.route.routed_by, v.baseline) for v in r.prompt.verdicts}
    assert got[0] == ("code_python", "router", resolve("code_python", "prompt").id)
    assert got[1] == ("medical_qa", "router", resolve("medical_qa", "prompt").id)
    assert got[2] == ("global", "fallback", resolve("global", "prompt").id)  # the router is unsure
    assert r.prompt.n_tests == 3 and r.prompt.p_value is not None
    out = r.attempts[0].output.verdicts[0]
    assert out.route is not None and out.baseline == resolve(out.route.domain, "output").id


def test_a_routed_message_is_cached_under_its_own_baseline():
    guard, be = make(script=[benign(), generation(benign(40, seed=3)), generation(benign(40, seed=4))])
    msgs = [{"role": "user", "content": CODE}]
    asyncio.run(guard.chat(msgs))
    r = asyncio.run(guard.chat(msgs)).report
    assert r.prompt.cached == 1 and r.prompt.verdicts[0].route.domain == "code_python"
    assert [c[0] for c in be.calls].count("score") == 1


def test_a_tier_below_any_routed_baselines_resolution_is_refused_at_load():
    coarsest = max(resolve(d, "prompt").resolution for d in ("code_python", "medical_qa", "global"))
    assert coarsest > 0.001  # some domain baseline cannot give a p-value of 0.001
    bad = ROUTED.replace("{p: 0.01, action: annotate}", "{p: 0.001, action: reject}")
    with pytest.raises(ConfigError, match=r"routed\.yaml:\d+: prompt\.tiers\.0\.p: .*below the resolution"):
        make(bad)


def test_policy_check_explains_and_lists_the_routed_baselines(tmp_path):
    p = tmp_path / "routed.yaml"
    p.write_text(ROUTED)
    out = subprocess.run([sys.executable, "-m", "guardrail.cli", "policy", "check", str(p), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["baselines"] == {"prompt": "route", "output": "route"}
    assert set(doc["routed"]["prompt"]) >= {"code_python", "medical_qa", "global"}
    assert any("routed per text by domain" in line for line in doc["explanation"])


@pytest.mark.slow
def test_routed_screening_on_the_real_model(backend):
    guard = Guard(parse_policy(ROUTED, "routed.yaml"), backend, scorer=backend)
    d = asyncio.run(guard.screen_messages([{"role": "user", "content": CODE}, {"role": "user", "content": MEDICAL}]))
    assert [v.route.domain for v in d.verdicts] == ["code_python", "medical_qa"]
    assert all(v.scorable and 0 < v.p_value <= 1 and v.scorer_kind == "serving" for v in d.verdicts)
    assert d.verdicts[0].baseline != d.verdicts[1].baseline
