import pytest

from guardrail.backends.chat_template import CHATML, render_chat
from guardrail.errors import ConfigError


def test_content_separated_from_template():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_start|> there"}]
    pieces = render_chat(CHATML, msgs)
    text = "".join(p.text for p in pieces)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_start|> there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    content = [(p.text, p.message) for p in pieces if p.message is not None]
    assert content == [("Be brief.", 0), ("Hi <|im_start|> there", 1)]


def test_template_that_rewrites_content_is_refused():
    tpl = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ConfigError, match="transforms message content"):
        render_chat(tpl, [{"role": "user", "content": "hi"}])


def test_template_raise_exception_is_config_error():
    tpl = "{{ raise_exception('only user/assistant roles') }}"
    with pytest.raises(ConfigError, match="only user/assistant"):
        render_chat(tpl, [{"role": "user", "content": "hi"}])
