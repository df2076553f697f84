"""Chapter 00 exercise: count the parameters of DeepSeek-V3 from its config alone.

Fill in every function. Each takes a ``ModelConfig`` (official field names: ``dim``,
``n_heads``, ``q_lora_rank``, ``kv_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``,
``v_head_dim``, ``inter_dim``, ``moe_inter_dim``, ``n_routed_experts``, ``n_shared_experts``,
``n_activated_experts``, ``n_layers``, ``n_dense_layers``, ``vocab_size``, ``gate_bias``)
and returns a Python int. A linear layer from a to b holds a*b weights (no bias anywhere);
an RMSNorm over d holds d. Grade it with ``minideepseek grade 00``.
"""

from minideepseek.config import ModelConfig


def mla_parameters(config: ModelConfig) -> int:
    """One Multi-head Latent Attention layer (V3: 187,107,328).

    Queries: wq_a (dim -> q_lora_rank), q_norm (q_lora_rank), wq_b (q_lora_rank -> n_heads * qk_head_dim),
    or, when q_lora_rank == 0, a single wq (dim -> n_heads * qk_head_dim), with qk_head_dim = nope + rope.
    Keys/values: wkv_a (dim -> kv_lora_rank + qk_rope_head_dim), kv_norm (kv_lora_rank),
    wkv_b (kv_lora_rank -> n_heads * (qk_nope_head_dim + v_head_dim)). Output: wo (n_heads * v_head_dim -> dim).
    """
    raise NotImplementedError("count the weights of wq_a, q_norm, wq_b (or wq), wkv_a, kv_norm, wkv_b and wo")


def mlp_parameters(dim: int, hidden: int) -> int:
    """One SwiGLU MLP w2(silu(w1 x) * w3 x) with w1, w3: dim -> hidden and w2: hidden -> dim."""
    raise NotImplementedError("three matrices of dim x hidden")


def moe_layer_parameters(config: ModelConfig) -> int:
    """One whole MoE block (V3: 11,507,286,272).

    The attention, its two RMSNorms (attn_norm, ffn_norm over dim), n_routed_experts experts of width
    moe_inter_dim, the shared experts as one MLP of width n_shared_experts * moe_inter_dim, and the gate:
    a (n_routed_experts, dim) weight plus, when config.gate_bias, a bias of n_routed_experts.
    """
    raise NotImplementedError("attention + norms + routed experts + shared experts + gate")


def total_parameters(config: ModelConfig) -> int:
    """Every parameter of the main model, without the MTP modules (V3: 671,026,419,200).

    The embedding (vocab_size x dim), n_dense_layers dense blocks (attention, two norms, an MLP of width
    inter_dim), the remaining MoE blocks, the final norm (dim) and the output head (vocab_size x dim).
    """
    raise NotImplementedError("embedding + dense blocks + MoE blocks + final norm + head")


def activated_parameters(config: ModelConfig) -> int:
    """The parameters one token uses, counting the embedding row as a whole embedding (V3: 37,552,297,472).

    Like total_parameters, except that each MoE block runs only n_activated_experts of its routed experts
    (the shared experts and the whole gate always run).
    """
    raise NotImplementedError("total_parameters with n_activated_experts routed experts per MoE block")
