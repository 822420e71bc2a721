"""scripts/serve.sh end to end: vLLM's OpenAI server on 127.0.0.1 answers video requests at the method and ratio
asked for (the server's default: `--method evs --retention-ratio 0.1`).

Needs vLLM (`bash scripts/test_serving.sh`); skipped otherwise. The server is a child process of this test, in its
own process group, stopped at the end. The video is assets/demo.mp4 (48 frames) sent as a data URL; vLLM's loader
samples --frames 32 of them.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/test_serving.sh runs these tests")

from llava.compression import CompressionConfig  # noqa: E402
from llava.testing.tiny_checkpoint import vllm_spec, write_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 32
SERVER_RATIO = 0.1
SERVER_METHOD = "evs"
QUESTION = "What is moving?"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else ""
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_vllm"), "hf", spec=vllm_spec(), processor_files=True)


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "PYTHON": sys.executable, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server runs as it would for a user
    command = ["bash", str(ROOT / "scripts" / "serve.sh"), "--model", str(checkpoint), "--port", str(port),
               "--method", SERVER_METHOD, "--retention-ratio", str(SERVER_RATIO), "--frames", str(FRAMES),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve.sh exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            try:
                if call(f"{base}/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(2)
        yield base, str(checkpoint)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group serve.sh and vLLM's engine process live in
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def chat(server, ratio: object | None = None, method: object | None = None) -> tuple[int, dict | str]:
    base, model = server
    video = base64.b64encode((ROOT / "assets" / "demo.mp4").read_bytes()).decode()
    body: dict = {
        "model": model, "max_tokens": 4, "temperature": 0.0,
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{video}"}},
            {"type": "text", "text": QUESTION}]}],
    }
    kwargs = {key: value for key, value in (("retention_ratio", ratio), ("method", method)) if value is not None}
    if kwargs:
        body["mm_processor_kwargs"] = kwargs
    return call(f"{base}/v1/chat/completions", body)


def expected_prompt_tokens(checkpoint: str, ratio: float, question: str = QUESTION) -> int:
    """Text tokens of the chat prompt (one <video> token) with the video token replaced by the video's block."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    template = (Path(checkpoint) / "chat_template.jinja").read_text()
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"<video>\n{question}"}],
                                         chat_template=template, tokenize=False, add_generation_prompt=True)
    config = json.loads((Path(checkpoint) / "config.json").read_text())["vision_config"]
    per_frame = math.ceil(config["image_size"] // config["patch_size"] / 2) ** 2  # bilinear pool to ceil(side/2)
    n = FRAMES * per_frame
    block = n + 1 if ratio == 1.0 else CompressionConfig(retention_ratio=ratio).target_tokens(n)
    return len(tokenizer(text, add_special_tokens=False).input_ids) - 1 + block


@pytest.mark.parametrize(("ratio", "method"), [(None, None), (0.25, None), (1.0, None), (None, "vidcom2"),
                                               (0.25, "scc")])
def test_video_request_gets_the_ratios_token_count(server, ratio, method):
    status, reply = chat(server, ratio, method)
    assert status == 200, reply
    effective = SERVER_RATIO if ratio is None else ratio
    assert reply["usage"]["prompt_tokens"] == expected_prompt_tokens(server[1], effective)
    assert reply["usage"]["completion_tokens"] == 4
    assert isinstance(reply["choices"][0]["message"]["content"], str)


@pytest.mark.parametrize(("ratio", "reason"), [(1.5, r"must be in (0, 1], got 1.5"), ("a lot", "must be a number")])
def test_bad_ratio_gets_http_400_with_the_reason(server, ratio, reason):
    status, reply = chat(server, ratio)
    assert status == 400
    assert "retention_ratio" in reply and reason in reply


@pytest.mark.parametrize(("method", "reason"), [
    ("dycoke", "'dycoke' cannot be served: its count at a ratio is the nearest"),
    ("fastv", "'fastv' cannot be served: it prunes inside the language model"),
    ("foo", "must be one of the served methods"),
])
def test_unservable_method_gets_http_400_with_the_reason(server, method, reason):
    status, reply = chat(server, 0.25, method)
    assert status == 400
    assert reason in reply


def test_serve_script_rejects_a_bad_ratio_before_starting_vllm(checkpoint):
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "serve.sh"), "--model", str(checkpoint),
                             "--retention-ratio", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "error: mm_processor_kwargs 'retention_ratio'" in result.stderr
    assert "must be in (0, 1], got 0" in result.stderr


def test_docs_client_example_runs_against_the_server(server, capsys):
    page = (ROOT / "docs" / "serving.md").read_text().split("## Query the server", 1)[1]
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    base, model = server
    code = code.replace("http://127.0.0.1:8000/v1", f"{base}/v1")
    code = code.replace('"llava-hf/llava-onevision-qwen2-0.5b-ov-hf"', repr(model))
    code = code.replace('"assets/demo.mp4"', repr(str(ROOT / "assets" / "demo.mp4")))
    exec(compile(code, "docs/serving.md", "exec"), {})
    ratio = float(re.search(r'"retention_ratio": ([0-9.]+)', code).group(1))
    question = re.search(r'"type": "text", "text": "([^"]+)"', code).group(1)
    assert capsys.readouterr().out.split()[-1] == str(expected_prompt_tokens(model, ratio, question))
