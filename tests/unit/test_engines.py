"""Engine launch specs per vendor (command construction only; real runs need a lent accelerator)."""

from __future__ import annotations

import pytest

from controlplane.catalog import Dtype, load_catalog
from controlplane.executor import EngineError, launch_spec
from controlplane.executor.engines import advertised_host

CATALOG = load_catalog()
QWEN7 = CATALOG.model("qwen2.5-7b-instruct")
QWEN72 = CATALOG.model("qwen2.5-72b-instruct")


def spec(model=QWEN7, accelerator="H100", engine="vllm", **kw):  # type: ignore[no-untyped-def]
    args = {"tp": 1, "dtype": Dtype.BF16, "devices": [3], "port": 8100} | kw
    return launch_spec(CATALOG, model, CATALOG.accelerator(accelerator), engine, **args)


def flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_on_nvidia() -> None:
    s = spec(QWEN72, tp=4, devices=[4, 5, 6, 7], max_model_len=16384)
    assert s.argv[:3] == ("vllm", "serve", "Qwen/Qwen2.5-72B-Instruct")
    assert flag(s.argv, "--tensor-parallel-size") == "4"
    assert flag(s.argv, "--served-model-name") == "qwen2.5-72b-instruct"
    assert flag(s.argv, "--dtype") == "bfloat16"
    assert flag(s.argv, "--max-model-len") == "16384"
    assert flag(s.argv, "--gpu-memory-utilization") == "0.9"
    assert s.env == {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert s.health_url == "http://127.0.0.1:8100/health"
    assert "--quantization" not in s.argv


def test_vendor_visible_devices_and_environment() -> None:
    ascend = spec(accelerator="910B3", engine="vllm-ascend", devices=[2])
    assert ascend.env == {"ASCEND_RT_VISIBLE_DEVICES": "2"}
    assert ascend.argv[:2] == ("vllm", "serve")
    metax = spec(accelerator="C500", engine="vllm-metax", devices=[0])
    assert metax.env == {"CUDA_VISIBLE_DEVICES": "0", "MACA_PATH": "/opt/maca"}


def test_fp8_and_int8() -> None:
    fp8 = spec(dtype=Dtype.FP8)
    assert flag(fp8.argv, "--quantization") == "fp8"
    with pytest.raises(EngineError, match="model_path"):
        spec(dtype=Dtype.INT8)
    assert spec(dtype=Dtype.INT8, model_path="/models/qwen7-w8a8").argv[2] == "/models/qwen7-w8a8"


def test_template_engines() -> None:
    templates = {
        "suinfer-llm": "br_api_server --model {model_path} --tp {tp} --port {port} --name {served_name}"
    }
    biren = spec(
        accelerator="BR104", engine="suinfer-llm", devices=[1], templates=templates, model_path="/m/q7"
    )
    assert biren.argv == ("br_api_server", "--model", "/m/q7", "--tp", "1", "--port", "8100", "--name",
                          "qwen2.5-7b-instruct")  # fmt: skip
    assert biren.env == {"SUPA_VISIBLE_DEVICES": "1"}
    with pytest.raises(EngineError, match="command template"):
        spec(accelerator="910B3", engine="mindie", devices=[0])
    with pytest.raises(EngineError, match=r"templates\.suinfer-llm"):
        spec(accelerator="BR104", engine="suinfer-llm", devices=[0], templates={"suinfer-llm": "run {gpus}"})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"engine": "vllm-ascend"}, "engine:"),  # H100 is NVIDIA
        ({"model": CATALOG.model("deepseek-v3"), "accelerator": "BR104", "engine": "suinfer-llm"}, "engine:"),
        ({"accelerator": "A100", "dtype": Dtype.FP8}, "dtype:"),
        ({"tp": 3, "devices": [0, 1, 2]}, "tp:"),
        ({"tp": 2, "devices": [0, 0]}, "devices:"),
        ({"port": 80}, "port:"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ],
)
def test_bad_specs_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(EngineError) as info:
        spec(**kw)
    assert str(info.value).startswith(field)


def test_a_launch_moves_to_the_nodes_host_in_every_argument_that_held_it() -> None:
    vllm = spec()
    assert vllm.host == "127.0.0.1" and flag(vllm.argv, "--host") == "127.0.0.1"  # `tokenfab up`
    moved = vllm.on_host("10.1.2.3")
    assert flag(moved.argv, "--host") == "10.1.2.3"
    assert moved.health_url == "http://10.1.2.3:8100/health" and moved.endpoint == "http://10.1.2.3:8100"
    assert [a for a in moved.argv if a != "10.1.2.3"] == [a for a in vllm.argv if a != "127.0.0.1"]
    assert vllm.on_host("127.0.0.1") is vllm

    templates = {
        "mindie": "mindie_server --bind={host}:{port} --peer {host} --model {model_path} --x 127.0.0.1"
    }
    mindie = spec(accelerator="910B3", engine="mindie", devices=[0], templates=templates)
    assert mindie.argv[1:4] == ("--bind=127.0.0.1:8100", "--peer", "127.0.0.1")
    v6 = mindie.on_host("fd00::7")
    assert v6.argv[1:4] == ("--bind=fd00::7:8100", "--peer", "fd00::7")
    assert v6.argv[-1] == "127.0.0.1"  # a literal of the operator's template is not a host slot
    assert v6.health_url == "http://[fd00::7]:8100/health"


def test_the_advertised_host_is_the_node_ip_the_agent_passed_down_or_loopback() -> None:
    assert advertised_host({}) == "127.0.0.1"
    assert advertised_host({"TOKENFAB_RAY_NODE_IP": " 10.0.0.7 "}) == "10.0.0.7"
    assert advertised_host({"TOKENFAB_RAY_NODE_IP": "::1"}) == "::1"
    with pytest.raises(EngineError, match="TOKENFAB_RAY_NODE_IP"):
        advertised_host({"TOKENFAB_RAY_NODE_IP": "node-a; rm -rf /"})


async def test_a_simulated_replica_listens_on_and_advertises_the_node_ip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json
    from dataclasses import asdict

    from controlplane.catalog.perf import EngineProfile
    from controlplane.executor import httpio
    from controlplane.executor.adapters import SimulatedEngineServer
    from tokenfab.v1 import executor_pb2

    profile = EngineProfile.of(QWEN7, CATALOG.accelerator("H100"), 1, Dtype.BF16)
    monkeypatch.setenv("TOKENFAB_RAY_NODE_IP", "127.0.0.2")  # a second loopback address stands in
    server = SimulatedEngineServer(
        QWEN7.name, executor_pb2.SimulatedEngine(profile_json=json.dumps(asdict(profile)))
    )
    await server.start()
    try:
        assert server.endpoint.startswith("http://127.0.0.2:")
        assert (await httpio.request("GET", server.endpoint + "/health", timeout_s=5)).status == 200
    finally:
        await server.stop(0.0)
