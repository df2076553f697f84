"""Chapter 05 exercise: assemble DeepSeek-V3 and account for every parameter.

Fill in every function below, then grade your work with

    minideepseek grade 05        (or: pytest tests/exercises/test_05_model.py --student)

The counting functions take only a ``ModelConfig``: work from the tensor shapes
(chapter 03 for the attention, chapter 04 for the experts and the gate), not from a built model.
``build_model`` and ``init_weights`` assemble the model from its parts: ``minideepseek.attention.MLA``,
``minideepseek.moe.MLP``, ``minideepseek.moe.MoE`` (and its ``Gate``), ``minideepseek.norm.RMSNorm``,
``torch.nn.Embedding``/``Linear`` and ``minideepseek.rope.precompute_freqs_cis``; not from
``minideepseek.block.Block``, ``minideepseek.model.Transformer`` or ``minideepseek.mtp.MTPModule``,
which are what the grader compares your model with.
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


def build_model(config: ModelConfig) -> nn.Module:
    """DeepSeek-V3 assembled from its parts, with the package's parameter names (so that a ``Transformer``'s
    state dict loads into it with ``strict=True``):

        embed                 nn.Embedding(vocab_size, dim)
        layers.i              a pre-norm block: attn_norm, attn (MLA), ffn_norm, ffn; ffn is a dense
                              MLP(dim, inter_dim) in the first n_dense_layers layers and MoE(config) in the others
        norm, head            the final RMSNorm and nn.Linear(dim, vocab_size, bias=False)
                              (head.weight IS embed.weight when config.tie_word_embeddings)
        mtp.k (k = 0..D-1)    enorm, hnorm (RMSNorm), eh_proj (nn.Linear(2 * dim, dim, bias=False)),
                              block (a block with an MoE, layer id n_layers + k), norm (its own RMSNorm)

    forward(tokens: (batch, seq) int64) -> (logits: (batch, seq, vocab), [mtp_logits^1, ..., mtp_logits^D]).
    h = the last block's output (before the final norm); logits = head(norm(h)). Depth k (1-based) runs on
    the first seq - k positions: h^k = block(eh_proj([enorm(embed(tokens[:, k:])) ; hnorm(h^{k-1}[:, :seq-k])]))
    with h^0 = h, and mtp_logits^k = head(mtp[k-1].norm(h^k)). Every block and depth reads the RoPE table
    precompute_freqs_cis(config, seq) of positions 0 .. seq-1 (cut to its length). Every RMSNorm uses
    config.norm_eps.
    """
    raise NotImplementedError("build_model: blocks (dense first, then MoE), final norm and head, MTP modules")


def init_weights(model: nn.Module, std: float = 0.006) -> None:
    """DeepSeek-V3's initialisation, in place (report section 4.2: every weight from N(0, 0.006)).

    Every nn.Linear and nn.Embedding weight, and every MoE router (``minideepseek.moe.Gate``) weight, from
    a normal distribution of mean 0 and standard deviation ``std``; every RMSNorm gain 1; every router bias
    (``Gate.bias``, when present) 0. Works on any module that contains such parts, e.g. a ``Transformer``.
    """
    raise NotImplementedError("init_weights: normal(0, std) matrices, unit gains, zero router biases")
