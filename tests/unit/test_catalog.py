from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.catalog import CatalogError, Dtype, load_catalog
from controlplane.domain.nodes import Vendor

REQUIRED_MODELS = {
    "qwen2.5-7b-instruct",
    "qwen2.5-72b-instruct",
    "llama-3.1-8b-instruct",
    "glm-4-9b",
    "deepseek-v3",
}


def test_packaged_catalog() -> None:
    catalog = load_catalog()
    assert set(catalog.models) >= REQUIRED_MODELS
    assert {a.vendor for a in catalog.accelerators.values()} == set(Vendor)
    assert len(catalog.accelerators) >= 10
    for model in catalog.models.values():
        if model.name != "deepseek-v3":  # MLA: compressed latent, not per-head K and V
            assert model.kv_bytes_per_token == 2 * model.layers * model.kv_heads * model.head_dim * 2, (
                model.name
            )
    deepseek = catalog.model("deepseek-v3")
    assert deepseek.active_parameters_b == 37 and deepseek.parameters_b == 671


def test_engines_per_vendor() -> None:
    catalog = load_catalog()
    qwen = catalog.model("qwen2.5-7b-instruct")
    assert catalog.engines_for(qwen, Vendor.NVIDIA) == ("vllm",)
    assert catalog.engines_for(qwen, Vendor.ASCEND) == ("vllm-ascend", "mindie")
    assert catalog.engines_for(qwen, Vendor.METAX) == ("vllm-metax",)
    assert catalog.engines_for(qwen, Vendor.BIREN) == ("suinfer-llm",)
    assert catalog.engines_for(catalog.model("deepseek-v3"), Vendor.BIREN) == ()


def test_tp_sizes_divide_heads() -> None:
    catalog = load_catalog()
    assert catalog.model("qwen2.5-7b-instruct").tp_sizes(8) == [1, 2, 4]  # 28 heads
    assert catalog.model("llama-3.1-8b-instruct").tp_sizes(8) == [1, 2, 4, 8]


def test_override_merges_field_by_field(tmp_path: Path) -> None:
    override = tmp_path / "mine.yaml"
    override.write_text("accelerators:\n  H100: {price_per_hour: 3.1}\n  MI300X: {vendor: nvidia, memory_gib: 192,"
                        " bandwidth_tb_s: 5.3, tflops_bf16: 1307}\n")  # fmt: skip
    catalog = load_catalog(override)
    assert catalog.accelerator("H100").price_per_hour == 3.1
    assert catalog.accelerator("H100").bandwidth_tb_s == 3.35  # untouched
    assert catalog.accelerator("MI300X").memory_gib == 192
    assert Dtype.BF16 in catalog.accelerator("MI300X").dtypes


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("accelerators:\n  H100: {bandwidth_tb_s: -1}\n", "accelerators.H100.bandwidth_tb_s"),
        ("accelerators:\n  X: {vendor: intel, memory_gib: 8, bandwidth_tb_s: 1, tflops_bf16: 1}\n",
         "accelerators.X.vendor"),
        ("models:\n  m: {parameters_b: 1, layers: 2, hidden_size: 8, attention_heads: 6, kv_heads: 4, head_dim: 2,"
         " kv_bytes_per_token: 8, context_length: 8}\n", "multiple of kv_heads"),
        ("gpus: {}\n", "unknown top-level keys"),
        ("accelerators: [1, 2]\n", "must be a mapping"),
    ],
)  # fmt: skip
def test_bad_overrides_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert fragment in str(info.value)


def test_unknown_names() -> None:
    catalog = load_catalog()
    with pytest.raises(KeyError, match="unknown model"):
        catalog.model("gpt-5")
    with pytest.raises(KeyError, match="unknown accelerator"):
        catalog.accelerator("TPUv5")
