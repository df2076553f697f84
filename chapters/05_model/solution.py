"""Chapter 05 reference solutions: parameter accounting and the block (see exercise.py)."""

from collections.abc import Callable

import torch
from torch import nn

from minideepseek.config import ModelConfig
from minideepseek.model import Transformer


def count_mla_parameters(config: ModelConfig) -> int:
    c = config
    query_out = c.n_heads * c.qk_head_dim
    if c.q_lora_rank == 0:
        query = c.dim * query_out  # wq
    else:
        query = c.dim * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * query_out  # wq_a, q_norm, wq_b
    keys_values = c.dim * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank  # wkv_a, kv_norm
    keys_values += c.kv_lora_rank * c.n_heads * (c.qk_nope_head_dim + c.v_head_dim)  # wkv_b
    return query + keys_values + c.n_heads * c.v_head_dim * c.dim  # wo


def _mlp(dim: int, inter_dim: int) -> int:
    return 3 * dim * inter_dim  # w1, w2, w3


def _moe_ffn(config: ModelConfig, routed_experts: int) -> int:
    c = config
    gate = c.n_routed_experts * c.dim + (c.n_routed_experts if c.gate_bias else 0)
    return routed_experts * _mlp(c.dim, c.moe_inter_dim) + _mlp(c.dim, c.n_shared_experts * c.moe_inter_dim) + gate


def count_moe_layer_parameters(config: ModelConfig) -> int:
    return count_mla_parameters(config) + 2 * config.dim + _moe_ffn(config, config.n_routed_experts)


def count_model_parameters(config: ModelConfig) -> tuple[int, int]:
    c = config
    attention_and_norms = count_mla_parameters(c) + 2 * c.dim
    dense_layers = c.n_dense_layers * (attention_and_norms + _mlp(c.dim, c.inter_dim))
    n_moe = c.n_layers - c.n_dense_layers
    embedding_head = c.vocab_size * c.dim * (1 if c.tie_word_embeddings else 2)
    outside_layers = embedding_head + c.dim  # + final norm
    total = outside_layers + dense_layers + n_moe * count_moe_layer_parameters(c)
    activated = outside_layers + dense_layers + n_moe * (attention_and_norms + _moe_ffn(c, c.n_activated_experts))
    return total, activated


def build_on_meta(config: ModelConfig) -> nn.Module:
    with torch.device("meta"):
        return Transformer(config)


def block_forward(x: torch.Tensor, freqs_cis: torch.Tensor, attn_norm: Callable, attn: Callable,
                  ffn_norm: Callable, ffn: Callable) -> torch.Tensor:
    h = x + attn(attn_norm(x), freqs_cis)
    return h + ffn(ffn_norm(h))
