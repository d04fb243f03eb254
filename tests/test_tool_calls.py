"""Tool calls an agent can act on: the function is among the tools offered, the arguments are one JSON object
satisfying the tool's parameters schema; under agent-self-check a bad call is regenerated (scripted backend
claiming the embedded scorer's identity, the real shipped baselines)."""

from __future__ import annotations

import asyncio

import pytest
from guard_helpers import benign, embedded_scorer

from guardrail.backends.scripted import ScriptedBackend
from guardrail.guard import Guard, load_policy
from guardrail.guard.policy import PolicyError, parse_policy
from guardrail.guard.tool_calls import tool_call_problems
from guardrail.types import Generation, Side

TOOLS = [{"type": "function", "function": {"name": "transfer", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}, "eur": {"type": "number", "minimum": 0}},
    "required": ["to", "eur"], "additionalProperties": False}}}]


def call(name: str = "transfer", args: str = '{"to": "acct-9", "eur": 5}') -> dict:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}


@pytest.mark.parametrize(("c", "tools", "want"), [
    (call(), TOOLS, []),
    (call("transfre"), TOOLS, ["'transfre': not among the tools offered (transfer)"]),
    (call(args='{"to": "acct-9", "eur": '), TOOLS, ["'transfer': arguments are not JSON"]),
    (call(args='[1, 2]'), TOOLS, ["'transfer': arguments are not a JSON object"]),
    (call(args='{"to": "acct-9"}'), TOOLS, ["'transfer': arguments: 'eur' is a required property"]),
    (call(args='{"to": 9, "eur": -1}'), TOOLS, ["'transfer': eur: -1 is less than the minimum of 0",
                                                "'transfer': to: 9 is not of type 'string'"]),
    (call("anything", '{"x": 1}'), None, []),  # no tools offered: only the JSON is checked
    ({"id": "c1"}, TOOLS, ["tool_calls[0]: no function"]),
])
def test_tool_call_problems(c, tools, want):
    got = tool_call_problems([c], tools)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert w in g


def test_a_broken_schema_is_a_problem_not_a_crash():
    bad = [{"type": "function", "function": {"name": "transfer", "parameters": {"type": "nonsense"}}}]
    assert "not a valid JSON Schema" in tool_call_problems([call()], bad)[0]


def _gen(c: dict) -> Generation:
    seg = benign(30, seed=21, side=Side.OUTPUT)
    return Generation(output=seg, finish_reason="tool_calls", prompt_tokens=12, message_extra={"tool_calls": [c]})


def test_agent_self_check_regenerates_an_invalid_tool_call_and_delivers_the_valid_retry():
    backend = ScriptedBackend([_gen(call(args='{"to": "acct-9"}')), _gen(call())], scorer=embedded_scorer())
    guard = Guard(load_policy("agent-self-check"), backend, output_regimes=[])
    res = asyncio.run(guard.chat([{"role": "user", "content": "pay acct-9 five euros"}], extra={"tools": TOOLS}))
    r = res.report
    assert r.attempts[0].action == "regenerate" and "invalid tool call" in r.attempts[0].output.reason
    assert r.attempts[0].output.tool_call_problems == ["tool_calls[0] 'transfer': arguments: 'eur' is a required "
                                                       "property"]
    assert r.regenerated == 1 and r.attempts[1].output.tool_call_problems == []
    assert r.action in ("allow", "annotate")
    assert res.completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == call()["function"]["arguments"]


def test_check_output_checks_a_planned_call_against_the_tools():
    backend = ScriptedBackend([benign(30, seed=22, side=Side.OUTPUT)], scorer=embedded_scorer())
    guard = Guard(load_policy("agent-self-check"), backend, output_regimes=[])
    d = asyncio.run(guard.check_output([{"role": "user", "content": "pay"}], call("wire"), tools=TOOLS))
    assert d.action == "regenerate" and "not among the tools offered" in d.tool_call_problems[0]


def test_policies_without_the_rule_do_not_check_and_the_prompt_side_cannot_have_it():
    pol = parse_policy("name: t\noutput:\n  tiers: [{p: 0.05, action: annotate}]\n", "t.yaml")
    backend = ScriptedBackend([_gen(call("nope"))], scorer=embedded_scorer())
    r = asyncio.run(Guard(pol, backend, output_regimes=[]).chat([{"role": "user", "content": "x"}],
                                                                 extra={"tools": TOOLS})).report
    assert r.attempts[0].output.tool_call_problems == [] and r.regenerated == 0
    with pytest.raises(PolicyError, match="invalid_tool_call"):
        parse_policy("name: t\nprompt:\n  invalid_tool_call: reject\n  tiers: [{p: 0.01, action: reject}]\n", "t.yaml")
