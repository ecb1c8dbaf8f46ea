"""Opt-in: prompt tasks against a real inference engine, llama-cpp-python's server.

Run with ``make test-llm`` (it installs ``llama-cpp-python[server]`` and ``gguf``);
``make test`` deselects it (marker ``slow``). The test writes its own tiny llama model
with random weights and starts the server as a service task of the workflow: the
reply's text is noise, but the round trip through the real server, its tokenizer and
its token counts are real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.support import pid_alive, wait_gone

from plait import LocalExecutionBackend, WorkflowEngine
from plait.backends.llm import OpenAIInferenceBackend

pytestmark = pytest.mark.slow


def write_tiny_llama(path: Path, n_embd: int = 32, n_layer: int = 2, n_ff: int = 64) -> None:
    """A valid llama-architecture GGUF: byte-level SentencePiece vocabulary, random weights."""
    import gguf
    import numpy as np

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, bytes
    vocab, heads = len(tokens), 4
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("plait-tiny-random")
    writer.add_context_length(256)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(n_embd // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int, ones: bool = False) -> None:
        data = np.ones(shape) if ones else rng.standard_normal(shape) * 0.02
        writer.add_tensor(name, data.astype(np.float32))

    tensor("token_embd.weight", vocab, n_embd)
    tensor("output_norm.weight", n_embd, ones=True)
    tensor("output.weight", vocab, n_embd)
    for i in range(n_layer):
        tensor(f"blk.{i}.attn_norm.weight", n_embd, ones=True)
        for part in ("q", "k", "v", "output"):
            tensor(f"blk.{i}.attn_{part}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_norm.weight", n_embd, ones=True)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


async def test_llama_cpp_started_as_a_service_task_answers_prompts(tmp_path):
    model = tmp_path / "tiny.gguf"
    write_tiny_llama(model)
    llm = OpenAIInferenceBackend("tiny", timeout=120, max_retries=0)
    flow = await WorkflowEngine.create(
        [LocalExecutionBackend(), llm], work_dir=str(tmp_path), handle_signals=False
    )

    @flow.executable_task(service=True, ready={"http": "/v1/models"}, ready_timeout=180)
    async def llama_server(model, port):
        return (
            f"{sys.executable} -m llama_cpp.server --model {model} --host 127.0.0.1 "
            f"--port {port} --n_ctx 256 --model_alias tiny"
        )

    @flow.prompt_task(max_tokens=8, temperature=0.0)
    async def ask(topic):
        return f"Tell me about {topic}."

    svc = llama_server(str(model))
    first, second = ask("cells", service=svc), ask("stars", service=svc)
    assert isinstance(await first, str) and isinstance(await second, str)
    for fut in (first, second):
        usage = fut.task["usage"]
        assert usage["input_tokens"] > len("Tell me about cells.") // 4  # byte-level tokens
        assert 1 <= usage["output_tokens"] <= 8
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert fut.task["finish_reason"] in ("length", "stop")
    pid = (await svc).pid
    assert pid_alive(pid)
    await flow.shutdown()
    assert await wait_gone(pid)  # the server went with the engine
