"""guardrail.wrap(client): the official openai client (sync and async) guarded, against a recording
OpenAI-compatible server on 127.0.0.1 with a scripted scorer (fast), and against llama-cpp-python's server with
the real embedded scorer (slow)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest
from guard_helpers import benign, embedded_scorer, gibberish_suffix
from recording_server import ANSWER, TOOL_CALL, RecordingServer

import guardrail
from guardrail.backends.scripted import ScriptedBackend
from guardrail.errors import InputError
from guardrail.guard import GuardRejectedError
from guardrail.types import Side

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_sync_client_guarded_answers_and_tool_calls_come_back_as_chatcompletions():
    with RecordingServer() as rec:
        scorer = ScriptedBackend([benign(seed=1), benign(30, seed=2, side=Side.OUTPUT), benign(seed=3),
                                  benign(20, seed=4, side=Side.OUTPUT)], scorer=embedded_scorer())
        client = guardrail.wrap(openai.OpenAI(base_url=rec.base_url, api_key="sk-test"), "default", scorer=scorer)
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "capital of France?"}],
                                           max_tokens=20)
        assert isinstance(r, openai.types.chat.ChatCompletion) and r.choices[0].message.content == ANSWER
        assert r.model_extra["guardrail"]["action"] in ("allow", "annotate")
        r = client.chat.completions.create(model="m", tools=TOOLS, response_format={"type": "json_object"},
                                           messages=[{"role": "user", "content": "weather in Paris?"}])
        assert r.choices[0].message.tool_calls[0].function.arguments == TOOL_CALL["function"]["arguments"]
        assert rec.requests[1]["tools"] == TOOLS and rec.requests[1]["response_format"] == {"type": "json_object"}
        assert all(req["model"] == "m" for req in rec.requests)


def test_rejected_prompt_raises_with_the_report_and_bad_calls_are_input_errors():
    with RecordingServer() as rec:
        scorer = ScriptedBackend([gibberish_suffix()], scorer=embedded_scorer())
        client = guardrail.wrap(openai.OpenAI(base_url=rec.base_url, api_key="x"), scorer=scorer)
        with pytest.raises(GuardRejectedError) as ei:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert ei.value.report.action == "reject" and ei.value.status == 400
        with pytest.raises(InputError):
            client.chat.completions.create(model="m", messages=[])


def test_streams_come_back_as_chunks_and_a_rejected_prompt_raises_before_the_first():
    with RecordingServer() as rec:
        scorer = ScriptedBackend([benign(seed=7), benign(30, seed=8, side=Side.OUTPUT), gibberish_suffix()],
                                 scorer=embedded_scorer())
        client = guardrail.wrap(openai.OpenAI(base_url=rec.base_url, api_key="x"), scorer=scorer)
        stream = client.chat.completions.create(model="m", stream=True, stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "capital of France?"}])
        chunks = list(stream)
        assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ANSWER and chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11
        assert chunks[-1].model_extra["guardrail"]["action"] in ("allow", "annotate")
        assert stream.result is not None and stream.result.report.attempts[0].text == ANSWER
        with pytest.raises(GuardRejectedError):
            client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "y"}])


def test_a_streamed_tool_call_comes_back_as_typed_tool_call_deltas():
    with RecordingServer() as rec:
        scorer = ScriptedBackend([benign(seed=11), benign(20, seed=12, side=Side.OUTPUT)], scorer=embedded_scorer())
        client = guardrail.wrap(openai.OpenAI(base_url=rec.base_url, api_key="x"), scorer=scorer)
        stream = client.chat.completions.create(model="m", stream=True, tools=TOOLS,
                                                messages=[{"role": "user", "content": "weather in Paris?"}])
        chunks = [c for c in stream if c.choices]
        calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
        assert isinstance(calls[0], openai.types.chat.chat_completion_chunk.ChoiceDeltaToolCall)
        assert calls[0].id == TOOL_CALL["id"] and calls[0].function.name == "get_weather"
        assert "".join(tc.function.arguments or "" for tc in calls) == TOOL_CALL["function"]["arguments"]
        assert not any(c.choices[0].delta.content for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert scorer.calls[-1][1][-1] == f"get_weather({TOOL_CALL['function']['arguments']})"  # the call was judged


def test_async_client_gets_an_async_create():
    async def go():
        with RecordingServer() as rec:
            scorer = ScriptedBackend([benign(seed=5), benign(30, seed=6, side=Side.OUTPUT)],
                                     scorer=embedded_scorer())
            client = guardrail.wrap(openai.AsyncOpenAI(base_url=rec.base_url, api_key="x"), scorer=scorer)
            r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == ANSWER and r.model_extra["guardrail"]["policy"] == "default"
            scorer.enqueue(benign(seed=9), benign(30, seed=10, side=Side.OUTPUT))
            s = await client.chat.completions.create(model="m", stream=True,
                                                     messages=[{"role": "user", "content": "again"}])
            text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            assert text == ANSWER
            await client.aclose()
    asyncio.run(go())


@pytest.mark.slow
def test_wrap_a_real_llamacpp_server_with_the_embedded_scorer(llamacpp_server):
    gcg = json.loads((Path(__file__).parent / "data" / "attacks_gcg_sample.jsonl").read_text().splitlines()[0])
    client = guardrail.wrap(openai.OpenAI(base_url=llamacpp_server, api_key="none"))
    r = client.chat.completions.create(model="smollm2", max_tokens=24, temperature=0,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.choices[0].message.content.strip()  # the server's own answer (its model's wording varies by version)
    assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length")
    g = r.model_extra["guardrail"]
    assert g["scorers"] == {"prompt": "embedded", "output": "embedded"} and g["prompt"]["action"] == "allow"
    assert g["attempts"][0]["output"]["p_value"] is not None  # the answer was judged
    with pytest.raises(GuardRejectedError):
        client.chat.completions.create(model="smollm2", max_tokens=24,
                                       messages=[{"role": "user", "content": gcg["prompt"]}])
    client.close()
