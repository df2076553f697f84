"""Chapter 05 reference solutions: parameter accounting and the block (see exercise.py)."""

from collections.abc import Callable

import torch
from torch import nn

from minideepseek.attention import MLA
from minideepseek.config import ModelConfig
from minideepseek.model import Transformer
from minideepseek.moe import MLP, Gate, MoE
from minideepseek.norm import RMSNorm
from minideepseek.rope import precompute_freqs_cis


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


class _Block(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = MLA(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = MLP(config.dim, config.inter_dim) if layer_id < config.n_dense_layers else MoE(config)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        return block_forward(x, freqs_cis, self.attn_norm, self.attn, self.ffn_norm, self.ffn)


class _MTP(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig):
        super().__init__()
        self.enorm = RMSNorm(config.dim, config.norm_eps)
        self.hnorm = RMSNorm(config.dim, config.norm_eps)
        self.eh_proj = nn.Linear(2 * config.dim, config.dim, bias=False)
        self.block = _Block(layer_id, config)
        self.norm = RMSNorm(config.dim, config.norm_eps)


class _Model(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(_Block(i, config) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.head.weight = self.embed.weight
        self.mtp = nn.ModuleList(_MTP(config.n_layers + k, config) for k in range(config.n_mtp_layers))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        seq = tokens.size(1)
        freqs_cis = precompute_freqs_cis(self.config, seq, tokens.device)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, freqs_cis)
        depth_logits = []
        h_k = h
        for k, module in enumerate(self.mtp, start=1):
            length = seq - k
            combined = module.eh_proj(torch.cat([module.enorm(self.embed(tokens[:, k:])),
                                                 module.hnorm(h_k[:, :length])], dim=-1))
            h_k = module.block(combined, freqs_cis[:length])
            depth_logits.append(self.head(module.norm(h_k)))
        return self.head(self.norm(h)), depth_logits


def build_model(config: ModelConfig) -> nn.Module:
    return _Model(config)


def init_weights(model: nn.Module, std: float = 0.006) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, Gate):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
