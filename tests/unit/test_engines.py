"""Engine launch specs per vendor (command construction only; real runs need a lent accelerator)."""

from __future__ import annotations

import pytest

from controlplane.catalog import Dtype, load_catalog
from controlplane.executor import EngineError, launch_spec

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
