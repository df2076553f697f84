"""Chapter 05 exercise: assemble DeepSeek-V3 and account for every parameter.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_05_model.py --student

The counting functions take only a ``ModelConfig``: work from the tensor shapes
(chapter 03 for the attention, chapter 04 for the experts and the gate), not from a built model.
"""

from collections.abc import Callable

import torch
from torch import nn

from minideepseek.config import ModelConfig


def count_mla_parameters(config: ModelConfig) -> int:
    """Parameters of one attention layer: wq_a, q_norm, wq_b (or a single wq when q_lora_rank == 0),
    wkv_a, kv_norm, wkv_b and wo. DeepSeek-V3: 187,107,328."""
    raise NotImplementedError("count_mla_parameters: add up the shapes of MLA's projections and norms")


def count_moe_layer_parameters(config: ModelConfig) -> int:
    """Parameters of one whole MoE layer (Block with layer_id >= n_dense_layers): attention, the two
    block norms, every routed expert, the shared expert(s) (one MLP of n_shared_experts * moe_inter_dim),
    the gate weight, and the gate bias when ``config.gate_bias``. DeepSeek-V3: 11,507,286,272."""
    raise NotImplementedError("count_moe_layer_parameters: attention + norms + experts + shared + gate")


def count_model_parameters(config: ModelConfig) -> tuple[int, int]:
    """(total, activated per token) of the main model, MTP modules excluded.

    total: embedding, every layer (the first n_dense_layers with a dense MLP of inter_dim), final norm,
    and the output head (none of its own when ``tie_word_embeddings``).
    activated: what one token uses, counting the whole embedding and head matrices (the published
    convention): the same, but only n_activated_experts routed experts in each MoE layer.
    DeepSeek-V3: (671,026,419,200, 37,552,297,472).
    """
    raise NotImplementedError("count_model_parameters: dense layers, MoE layers, embedding, norm, head")


def build_on_meta(config: ModelConfig) -> nn.Module:
    """A ``minideepseek.Transformer(config)`` whose parameters live on the ``meta`` device: shapes
    and dtypes only, no memory, so that even the 671B model can be built and inspected on a laptop."""
    raise NotImplementedError("build_on_meta: construct the Transformer under the meta device")


def block_forward(x: torch.Tensor, freqs_cis: torch.Tensor, attn_norm: Callable, attn: Callable,
                  ffn_norm: Callable, ffn: Callable) -> torch.Tensor:
    """One Transformer block, given its four sub-layers as callables.

    x: (batch, seq, dim); freqs_cis: (seq, qk_rope_head_dim // 2) complex.
    attn_norm(x), ffn_norm(x): (batch, seq, dim) -> same; attn(x, freqs_cis) -> (batch, seq, dim);
    ffn(x) -> (batch, seq, dim). DeepSeek-V3 uses PRE-norm residual blocks. Returns (batch, seq, dim).
    """
    raise NotImplementedError("block_forward: normalise, transform, add back - twice")
