"""The simulated engine's prefix cache, which gives prefix-affinity routing something to win:
a prompt whose leading blocks are cached skips their prefill and gets its first token sooner."""

from __future__ import annotations

from controlplane.executor.simengine import SimEngine, SimRequest
from tests.unit.test_simengine import PROFILE


def run(engine: SimEngine, request: SimRequest) -> SimRequest:
    engine.submit(request)
    engine.advance(request.arrival_s + 30.0)
    return engine.pop_finished()[0]


def test_cached_blocks_skip_their_prefill() -> None:
    engine = SimEngine(PROFILE, chunk_tokens=512, prefix_cache_blocks=1000, prefix_block_tokens=16)
    shared = tuple(range(200))  # 200 blocks = 3200 tokens of shared system prompt
    cold = run(engine, SimRequest("a", 4000, 4, arrival_s=0.0, block_hashes=(*shared, 900, 901)))
    warm = run(engine, SimRequest("b", 4000, 4, arrival_s=40.0, block_hashes=(*shared, 700)))
    assert (cold.cached_tokens, warm.cached_tokens) == (0, 3200)
    assert warm.ttft_s is not None
    assert cold.ttft_s is not None
    assert warm.ttft_s < cold.ttft_s / 2
    assert engine.prompt_tokens_total == 4000 + 800  # only what was computed


def test_a_full_hit_still_computes_one_token_and_the_cache_is_bounded() -> None:
    engine = SimEngine(PROFILE, prefix_cache_blocks=4, prefix_block_tokens=16)
    run(engine, SimRequest("a", 64, 2, arrival_s=0.0, block_hashes=(1, 2, 3, 4)))
    again = run(engine, SimRequest("b", 64, 2, arrival_s=40.0, block_hashes=(1, 2, 3, 4)))
    assert again.cached_tokens == 63
    run(engine, SimRequest("c", 64, 2, arrival_s=80.0, block_hashes=(5, 6, 7, 8)))  # evicts 1..4
    evicted = run(engine, SimRequest("d", 64, 2, arrival_s=120.0, block_hashes=(1, 2, 3, 4)))
    assert evicted.cached_tokens == 0


def test_without_a_cache_nothing_is_skipped() -> None:
    engine = SimEngine(PROFILE)
    run(engine, SimRequest("a", 64, 2, arrival_s=0.0, block_hashes=(1, 2, 3, 4)))
    assert run(engine, SimRequest("b", 64, 2, arrival_s=40.0, block_hashes=(1, 2, 3, 4))).cached_tokens == 0
