"""The live infeasibility check: which field is blamed and why, and the gateway's 400 before
admission (pure: no server started, no store)."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.autoscale.feasibility import LiveCheck
from controlplane.catalog import load_catalog
from controlplane.gateway import openai
from controlplane.gateway.routes import Lane
from controlplane.gateway.server import Gateway, GatewayConfig

CATALOG = load_catalog()
MODEL = "qwen2.5-7b-instruct"
CONTEXT = CATALOG.model(MODEL).context_length


def test_the_field_to_blame_and_the_reason() -> None:
    check = LiveCheck(CATALOG)
    assert check.check(MODEL, 2.0, 1000, 256) is None
    beyond = check.check(MODEL, 2.0, CONTEXT - 100, 1000)
    assert beyond is not None and beyond.field == "max_tokens"
    assert beyond.reason.startswith("context: ") and str(CONTEXT) in beyond.reason
    prompt = check.check(MODEL, 2.0, CONTEXT + 1, 16)
    assert prompt is not None and prompt.field == "prompt" and prompt.reason.startswith("context: ")
    # within the context, but no catalog shape prefills 30k tokens in 50 ms
    slow = check.check(MODEL, 0.05, 30_000, 16)
    assert slow is not None and slow.field == "prompt" and slow.reason.startswith("ttft: ")
    assert "0.05s TTFT target" in slow.reason
    assert check.check(MODEL, 10.0, 30_000, 16) is None  # the same prompt with time to prefill
    assert check.check("not-in-the-catalog", 0.05, 10**7, 10**7) is None  # unknown model: unchecked


def _gateway(tmp_path: Path) -> Gateway:
    gateway = Gateway(GatewayConfig(tenants_file=tmp_path / "tenants.yaml"))
    gateway.feasible = LiveCheck(CATALOG)
    return gateway


def _lane(ttft_s: float) -> Lane:
    return Lane("alpha", MODEL, ("req-1",), 100.0, ttft_s, False, ())


def test_the_gateway_answers_400_naming_the_field(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    ids = json.dumps({"model": MODEL, "prompt": [7] * (CONTEXT - 10), "max_tokens": 100}).encode()
    refused = gateway._infeasible(openai.parse("completions", ids), _lane(60.0))
    assert refused is not None and refused.status == 400
    error = json.loads(refused.body)["error"]  # type: ignore[arg-type]
    assert error["param"] == "max_tokens" and error["code"] == "infeasible_request"
    assert error["message"].startswith("max_tokens: context: ")
    # a chat prompt too long to prefill in time blames the messages
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 200_000}], "max_tokens": 4}
    refused = gateway._infeasible(openai.parse("chat", json.dumps(chat).encode()), _lane(0.05))
    assert refused is not None
    error = json.loads(refused.body)["error"]  # type: ignore[arg-type]
    assert error["param"] == "messages" and error["message"].startswith("messages: ttft: ")
    ok = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 16}).encode()
    assert gateway._infeasible(openai.parse("completions", ok), _lane(0.05)) is None


def test_a_text_prompt_is_refused_only_well_beyond_the_limit(tmp_path: Path) -> None:
    """A text prompt's count is an estimate (4 characters a token): one estimated at 1.5 x the
    context may still fit and goes through; one at 3 x cannot and is refused."""
    gateway = _gateway(tmp_path)
    for factor, refused in ((1.5, False), (3, True)):
        body = {"model": MODEL, "prompt": "word " * int(CONTEXT * factor * 4 / 5), "max_tokens": 16}
        answer = gateway._infeasible(openai.parse("completions", json.dumps(body).encode()), _lane(600.0))
        assert (answer is not None) is refused
