"""Chapter 00: the parameter count of DeepSeek-V3, graded against the published numbers.

The V3 figures are those of the technical report and README_WEIGHTS, recomputed by hand
in the reference notes (671,026,419,200 total; 37,552,297,472 activated with embedding
and head). The V2 figures are those of the official 16B and 236B configs.
"""

import torch

from minideepseek import ModelConfig, Transformer

V3 = ModelConfig.from_preset("v3-671b")
V2_LITE = ModelConfig.from_preset("v2-lite-16b")  # q_lora_rank = 0 (a plain wq), no gate bias
V2 = ModelConfig.from_preset("v2-236b")


def test_mla_parameters(exercise):
    """One attention layer counts wq_a, q_norm, wq_b (or one wq when q_lora_rank is 0), wkv_a (latent + rope
    outputs), kv_norm, wkv_b (per head nope + v) and wo.
    Reread: The equations"""
    ex = exercise("00")
    # wq_a 7168*1536 + q_norm 1536 + wq_b 1536*128*192 + wkv_a 7168*576 + kv_norm 512
    # + wkv_b 512*128*256 + wo 128*128*7168
    assert ex.mla_parameters(V3) == 187_107_328
    # V2-Lite has no query compression: wq 2048*16*192 + wkv_a 2048*576 + 512 + 512*16*256 + 16*128*2048.
    assert ex.mla_parameters(V2_LITE) == 6_291_456 + 1_179_648 + 512 + 2_097_152 + 4_194_304


def test_mlp_parameters(exercise):
    """A SwiGLU MLP holds three matrices of dim x hidden (w1, w2, w3), no bias.
    Reread: The equations"""
    ex = exercise("00")
    assert ex.mlp_parameters(7168, 2048) == 44_040_192  # one routed expert of V3
    assert ex.mlp_parameters(7168, 18432) == 396_361_728  # V3's dense MLP


def test_moe_layer_parameters(exercise):
    """An MoE block counts the attention, its two norms, every routed expert, the shared expert(s) as one MLP of
    n_shared_experts * moe_inter_dim, the gate weight, and the gate bias only when the config has one.
    Reread: Pitfalls"""
    ex = exercise("00")
    assert ex.moe_layer_parameters(V3) == 11_507_286_272
    # Without the gate bias the block is 256 parameters smaller.
    assert ex.moe_layer_parameters(ModelConfig.from_preset("v3-671b", gate_bias=False)) == 11_507_286_016


def test_total_parameters_match_the_published_models(exercise):
    """The total adds the embedding, the n_dense_layers dense blocks, the MoE blocks, the final norm and the
    output head (MTP excluded): 671,026,419,200 for V3.
    Reread: Pitfalls"""
    ex = exercise("00")
    assert ex.total_parameters(V3) == 671_026_419_200
    assert ex.total_parameters(V2_LITE) == 15_706_484_224
    assert ex.total_parameters(V2) == 235_741_434_880


def test_activated_parameters_match_the_published_models(exercise):
    """Activated parameters are the total with only n_activated_experts routed experts per MoE block (shared
    experts and gate always count), embedding and head included.
    Reread: Pitfalls"""
    ex = exercise("00")
    assert ex.activated_parameters(V3) == 37_552_297_472
    # The model card's "36.6B" (README_WEIGHTS) leaves out the input embedding (129,280 x 7,168).
    assert ex.activated_parameters(V3) - 129_280 * 7168 == 36_625_618_432
    # V2-Lite: 2.4B activated without the embedding (102,400 x 2,048).
    assert ex.activated_parameters(V2_LITE) - 102_400 * 2048 == 2_451_435_008


def test_total_parameters_of_a_built_model(exercise):
    """The count must equal the parameters of a tiny Transformer built from the same config (MTP excluded, head
    counted once when tied).
    Reread: The code, next to the math"""
    ex = exercise("00")
    config = ModelConfig.from_preset("tiny")
    with torch.device("meta"):
        model = Transformer(config)
    built = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("mtp."))
    assert ex.total_parameters(config) == built
