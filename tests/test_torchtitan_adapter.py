"""The torchtitan state-dict adapter against hand-written torchtitan names and shapes.

The expected names are those of torchtitan's DeepSeek-V3 (``DeepSeekV3StateDictAdapter.from_hf_map``,
``GroupedExperts``: w1/w3 (experts, hidden, dim), w2 (experts, dim, hidden)); torchtitan itself is not needed.
"""

import pytest
import torch
import torch.nn.functional as F

from minideepseek import ModelConfig, Transformer
from minideepseek.torchtitan_adapter import from_torchtitan, to_torchtitan

# dim 16, one dense layer then one MoE layer with 4 experts of width 8, one MTP module (dropped).
CONFIG = ModelConfig.from_preset("tiny", vocab_size=32, dim=16, inter_dim=24, moe_inter_dim=8, n_layers=2,
                                 n_heads=2, n_routed_experts=4, n_activated_experts=2, n_expert_groups=2,
                                 n_limited_groups=1, q_lora_rank=8, kv_lora_rank=6, qk_nope_head_dim=4,
                                 qk_rope_head_dim=2, v_head_dim=4)

ATTENTION = {  # per layer: q_lora 8, kv_lora 6 (+ rope 2), 2 heads of (4 + 2) q/k and 4 v
    "attention_norm.weight": (16,), "ffn_norm.weight": (16,),
    "attention.wq_a.weight": (8, 16), "attention.q_norm.weight": (8,), "attention.wq_b.weight": (12, 8),
    "attention.wkv_a.weight": (8, 16), "attention.kv_norm.weight": (6,), "attention.wkv_b.weight": (16, 6),
    "attention.wo.weight": (16, 8),
}
EXPECTED = {
    "tok_embeddings.weight": (32, 16), "norm.weight": (16,), "output.weight": (32, 16),
    **{f"layers.0.{k}": v for k, v in ATTENTION.items()},
    "layers.0.feed_forward.w1.weight": (24, 16), "layers.0.feed_forward.w2.weight": (16, 24),
    "layers.0.feed_forward.w3.weight": (24, 16),
    **{f"layers.1.{k}": v for k, v in ATTENTION.items()},
    "layers.1.moe.router.gate.weight": (4, 16), "layers.1.moe.expert_bias": (4,),
    "layers.1.moe.experts.w1": (4, 8, 16), "layers.1.moe.experts.w2": (4, 16, 8), "layers.1.moe.experts.w3": (4, 8, 16),
    "layers.1.moe.shared_experts.w1.weight": (8, 16), "layers.1.moe.shared_experts.w2.weight": (16, 8),
    "layers.1.moe.shared_experts.w3.weight": (8, 16),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(CONFIG)


def test_names_and_shapes_are_torchtitans(model):
    converted = to_torchtitan(model.state_dict(), CONFIG)
    assert {k: tuple(v.shape) for k, v in converted.items()} == EXPECTED


def test_grouped_experts_compute_our_experts(model):
    """torchtitan's GroupedExperts: silu(x w1[e]^T) * (x w3[e]^T) w2[e]^T must equal our expert e."""
    converted = to_torchtitan(model.state_dict(), CONFIG)
    w1, w2, w3 = (converted[f"layers.1.moe.experts.{w}"] for w in ("w1", "w2", "w3"))
    x = torch.randn(5, CONFIG.dim)
    for e, expert in enumerate(model.layers[1].ffn.experts):
        grouped = (F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T
        torch.testing.assert_close(grouped, expert(x), rtol=0, atol=1e-6)
    assert converted["layers.1.moe.expert_bias"].dtype == torch.float32


def test_round_trip_restores_every_tensor(model):
    state = model.state_dict()
    back = from_torchtitan({**to_torchtitan(state, CONFIG), "layers.1.moe.tokens_per_expert": torch.zeros(4)},
                           CONFIG)
    assert sorted(back) == sorted(k for k in state if not k.startswith("mtp."))
    for key, tensor in back.items():
        assert torch.equal(tensor, state[key]), key
    fresh = Transformer(CONFIG)
    missing, unexpected = fresh.load_state_dict(back, strict=False)
    assert not unexpected and all(k.startswith("mtp.") for k in missing)


def test_errors_name_the_problem(model):
    state = {k: v for k, v in model.state_dict().items() if k != "layers.1.ffn.experts.3.w2.weight"}
    with pytest.raises(ValueError, match="experts \\[3\\] are missing"):
        to_torchtitan(state, CONFIG)
    with pytest.raises(KeyError, match="layers.0.mystery.weight"):
        from_torchtitan({"layers.0.mystery.weight": torch.zeros(1)}, CONFIG)
    with pytest.raises(ValueError, match="3 experts stacked"):
        from_torchtitan({"layers.1.moe.experts.w1": torch.zeros(3, 8, 16)}, CONFIG)
