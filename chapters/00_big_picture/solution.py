"""Chapter 00 reference solution: the parameter count of DeepSeek-V3 from its config."""

from minideepseek.config import ModelConfig


def mla_parameters(config: ModelConfig) -> int:
    c = config
    heads, qk_head_dim = c.n_heads, c.qk_nope_head_dim + c.qk_rope_head_dim
    if c.q_lora_rank:
        query = c.dim * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * qk_head_dim
    else:
        query = c.dim * heads * qk_head_dim
    key_value = (c.dim * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
                 + c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim))
    return query + key_value + heads * c.v_head_dim * c.dim


def mlp_parameters(dim: int, hidden: int) -> int:
    return 3 * dim * hidden


def _moe_layer(config: ModelConfig, routed: int) -> int:
    """A MoE block in which ``routed`` of the routed experts count."""
    c = config
    gate = c.n_routed_experts * c.dim + (c.n_routed_experts if c.gate_bias else 0)
    return (mla_parameters(c) + 2 * c.dim + routed * mlp_parameters(c.dim, c.moe_inter_dim)
            + mlp_parameters(c.dim, c.n_shared_experts * c.moe_inter_dim) + gate)


def moe_layer_parameters(config: ModelConfig) -> int:
    return _moe_layer(config, config.n_routed_experts)


def _model(config: ModelConfig, routed: int) -> int:
    c = config
    dense_layer = mla_parameters(c) + 2 * c.dim + mlp_parameters(c.dim, c.inter_dim)
    embedding_and_head = (1 if c.tie_word_embeddings else 2) * c.vocab_size * c.dim
    return (embedding_and_head + c.n_dense_layers * dense_layer
            + (c.n_layers - c.n_dense_layers) * _moe_layer(c, routed) + c.dim)


def total_parameters(config: ModelConfig) -> int:
    return _model(config, config.n_routed_experts)


def activated_parameters(config: ModelConfig) -> int:
    return _model(config, config.n_activated_experts)
