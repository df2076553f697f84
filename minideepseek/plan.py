"""Will it fit, and how long will it take? Memory and time of a run, predicted from the config alone.

``plan_training(config, batch_size, seq_len, ...)`` adds up what a training step keeps in memory,
term by term, and ``plan_generation`` does the same for inference; ``minideepseek plan`` prints them.
Nothing is allocated: the model is a ``ModelConfig``, the counts come from ``params.count_parameters``.

**Training memory** (bytes; P = trainable parameters, MTP module included; N = batch x seq tokens)::

    weights        4 P          fp32 master weights (bf16 autocast casts them on the fly)
    gradients      4 P          fp32, one per weight, allocated during the backward pass
    AdamW state    8 P          exp_avg and exp_avg_sq, fp32 (created by the first step)
    activations    N x sum over layers of the bytes autograd saves for the backward pass:
                     RMSNorm      x, 1/rms, x/rms and the output: 3 d + 1 values (4 norms per MLA)
                     MLA          q and k (H x qk_head each), v and the output (H x v_head each),
                                  the input of wo; eager attention adds the softmax probabilities,
                                  H x seq values per token (quadratic in seq); SDPA keeps none
                     dense MLP    w1 and w3 outputs, silu, their product: 4 x inter
                     MoE          the gate's scores, and for the k routed copies of each token the
                                  MoE dispatch buffers: the gathered input, w1/w3 outputs, silu,
                                  product, expert outputs: k (2 d + 4 moe_inter); the shared experts
                     loss         the log-softmax of the head's logits, vocab values (fp32) per head
                   (under bf16 autocast a linear saves its input as a bf16 copy: 2 more bytes
                   per value of what feeds a linear; the rest stays fp32)
    transients     the largest short-lived buffers: the logits' gradient at the start of the backward
                   pass (2 x N x vocab fp32) or, where the scores are kept, one layer's scores and their
                   gradient (2 x batch x H x seq^2), plus the gradients of the largest layer's
                   activations while its backward runs
    runtime        what the process holds besides tensors: on the CPU the interpreter with PyTorch,
                   tokenizers and matplotlib loaded (``CPU_RUNTIME_BYTES``); on a GPU nothing (``max_memory_allocated`` counts
                   tensors only), the CUDA context is left to the headroom

    peak = weights + AdamW + max(activations + transients, gradients) + runtime

The two branches of the max are the two moments memory peaks: the start of the backward pass (all
activations kept, few gradients yet) and its end (every gradient, activations freed). On the CPU a
checkpoint write adds one more: the optimizer's file is serialised in memory, ``AdamW state`` bytes
on top of weights and state; the CPU peak is the larger of the two.

**Time**: FLOPs per step = N x ``params.training_flops_per_token`` (6 x the activated matrix
parameters, MTP included, plus the attention products, the convention MFU is measured in);
predicted seconds = FLOPs / (peak FLOP/s x MFU).

**Generation**: weights in the inference dtype (bf16 on a GPU, fp32 on the CPU; ``fp8``: the published
FP8 layout), plus the KV cache, (kv_lora + qk_rope) values per token per layer for the latent cache
(``absorbed``) or H x (qk_head + v_head) for the per-head one (``naive``), plus one step's logits.

The CPU check (``tests/test_plan.py``) runs real ``train_model`` runs in subprocesses and compares
their peak resident memory with ``plan_training``'s prediction: within 25 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import ModelConfig
from .params import count_parameters, training_flops_per_token
from .validation import UserError

GiB = 2**30
MiB = 2**20
# Resident memory of a training process besides its tensors: the interpreter with PyTorch, the
# tokenizer library and matplotlib loaded, as ``minideepseek train`` holds them (measured with a
# model of a few kilobytes): the floor of every CPU run's peak resident set.
CPU_RUNTIME_BYTES = 450 * MiB
# Default peak dense throughput (FLOP/s) and model FLOPs utilisation per device kind, when not given.
DEFAULT_PEAK_TFLOPS = {"cuda": 989.0, "mps": 14.0, "cpu": 0.1}
DEFAULT_MFU = {"cuda": 0.12, "mps": 0.2, "cpu": 0.4}  # small MoEs reach 10-20 % on a GPU


class PlanError(UserError):
    """A plan request that cannot be answered (a size of 0, an unreadable memory size)."""


def parse_bytes(text: str | int | float) -> int:
    """'24GB', '80GiB', '512MB', '24G' or a number of bytes -> bytes. GB and GiB both mean 2**30:
    GPU memory sizes are quoted in binary gigabytes (an "80 GB" H100 holds 80 GiB)."""
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise PlanError(f"cannot read the memory size {text!r}; write it like 24GB, 80GiB or 512MB")
    value, unit = float(match.group(1)), match.group(2).lower()
    return int(value * 1024 ** " kmgt".index(unit or " "))


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


@dataclass
class Plan:
    """A prediction: named memory terms (bytes), the peak, and the time of the run."""

    what: str
    terms: dict[str, float]
    peak: float
    per_layer: list[tuple[str, float]] = field(default_factory=list)  # (layer, activation bytes)
    device_memory: int | None = None
    headroom: float = 0.1
    max_batch_size: int | None = None
    flops_per_step: float | None = None
    seconds_per_step: float | None = None
    steps: int | None = None
    tokens_per_step: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        if self.device_memory is None:
            return None
        return self.peak <= self.device_memory * (1 - self.headroom)

    def table(self) -> str:
        lines = [self.what, ""]
        width = max(len(name) for name in [*self.terms, "peak"]) + 2
        for name, value in self.terms.items():
            lines.append(f"  {name:<{width}}{human(value):>12}")
        lines.append(f"  {'peak':<{width}}{human(self.peak):>12}")
        if self.per_layer:
            lines += ["", "  activations per layer:"]
            for name, value in self.per_layer:
                lines.append(f"    {name:<{width - 2}}{human(value):>12}")
        if self.device_memory is not None:
            usable = self.device_memory * (1 - self.headroom)
            verdict = "fits" if self.fits else "does NOT fit"
            lines += ["", f"  device memory {human(self.device_memory)} ({human(usable)} usable with "
                          f"{self.headroom:.0%} headroom): {verdict}"]
            if self.max_batch_size is not None:
                lines.append(f"  largest batch that fits: {self.max_batch_size}")
        if self.flops_per_step is not None:
            lines += ["", f"  FLOPs per step {self.flops_per_step:.3e}"]
            if self.seconds_per_step is not None:
                per_s = self.tokens_per_step / self.seconds_per_step if self.tokens_per_step else 0
                lines.append(f"  predicted {self.seconds_per_step:.3f} s per step, {per_s:,.0f} tokens/s")
                if self.steps:
                    total = self.seconds_per_step * self.steps
                    lines.append(f"  {self.steps} steps: {total / 60:.1f} min ({total / 3600:.2f} h)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- activations
def _attention_values(c: ModelConfig, seq_len: int, attention: str) -> tuple[float, float, float]:
    """Values saved per token by one MLA with its norm: (fp32, activation dtype, bf16 cast copies)."""
    h, qk, v = c.n_heads, c.qk_head_dim, c.v_head_dim
    f32 = 3 * c.dim + 1 + 3 * c.kv_lora_rank + 1 + h  # attn_norm, kv_norm, log-sum-exp of fused attention
    cast = c.dim + c.kv_lora_rank + h * v  # inputs of wq_a/wkv_a, wkv_b, wo
    if c.q_lora_rank:
        f32 += 3 * c.q_lora_rank + 1
        cast += c.q_lora_rank
    act = h * (2 * qk + 2 * v) + 2 * (h + 1) * c.qk_rope_head_dim  # q, k, v, the output; RoPE's inputs
    if attention == "eager":
        f32 += h * seq_len  # softmax probabilities: one row of H x seq per token
        cast += h * seq_len  # their copy for the probs @ v product
    return f32, act, cast


def _moe_values(c: ModelConfig) -> tuple[float, float, float]:
    k, d, i = c.n_activated_experts, c.dim, c.moe_inter_dim
    s = c.n_shared_experts * i
    f32 = 3 * d + 1 + 4 * c.n_routed_experts + 7 * k  # ffn_norm; gate scores, balance loss, indices, weights
    f32 += k * d  # dispatch: the gathered copies of the input
    act = k * (4 * i + d) + 4 * s  # w1|w3 outputs, silu, product, expert outputs; the shared experts
    cast = d + k * d + s  # bf16 copies of the gate's, experts' and shared experts' inputs
    return f32, act, cast


def _dense_values(c: ModelConfig) -> tuple[float, float, float]:
    return 3 * c.dim + 1, 4 * c.inter_dim, c.dim


def activation_bytes(c: ModelConfig, batch_size: int, seq_len: int, attention: str = "sdpa",
                     autocast: bool = False, fp8: bool = False) -> tuple[float, list[tuple[str, float]]]:
    """Bytes autograd keeps for the backward pass of one training forward, and their split per layer.

    ``attention="eager"`` keeps the softmax probabilities; so does SDPA where it falls back to its
    math kernel (on the CPU, whose fused kernel needs equal q/k and v head sizes): ``scores_kept``.
    """
    n = batch_size * seq_len
    act_bytes = 2 if autocast else 4  # matrix-product outputs are bf16 under autocast
    # A bf16 copy of each linear's input exists only under autocast; FP8 linears keep it in 1 byte.
    cast_bytes = (1 if fp8 else 2) if autocast else 0

    def size(*parts: tuple[float, float, float]) -> float:
        return n * sum(4 * f32 + act_bytes * act + cast_bytes * cast for f32, act, cast in parts)

    attn = _attention_values(c, seq_len, attention)
    dense, moe = size(attn, _dense_values(c)), size(attn, _moe_values(c))
    per_layer = [(f"layer {i} ({'MoE' if c.is_moe_layer(i) else 'dense'})",
                  moe if c.is_moe_layer(i) else dense) for i in range(c.n_layers)]
    head = size((3 * c.dim + 1 + c.vocab_size, 0, c.dim))  # final norm, head input, log-softmax (fp32)
    per_layer.append(("final norm + head + loss", head))
    for j in range(c.n_mtp_layers):  # enorm, hnorm, eh_proj's input, one MoE block, its norm, the shared head
        mtp = moe + head + size((2 * (3 * c.dim + 1) + 2 * c.dim, 0, 2 * c.dim))
        per_layer.append((f"MTP module {j}", mtp))
    return sum(value for _, value in per_layer), per_layer


def scores_kept(c: ModelConfig, device: str, attention: str) -> bool:
    """Whether a training forward keeps the (batch, H, seq, seq) attention probabilities: eager attention
    does; SDPA does on the CPU unless V is padded to the q/k head size (its fused kernel needs them equal)."""
    return attention == "eager" or (device == "cpu" and attention == "sdpa" and c.qk_head_dim != c.v_head_dim)


def trainable_parameters(c: ModelConfig) -> int:
    counts = count_parameters(c)
    bias = c.n_routed_experts * (c.n_layers - c.n_dense_layers + c.n_mtp_layers) if c.gate_bias else 0
    return counts.total + counts.mtp - bias


def flops_per_step(c: ModelConfig, batch_size: int, seq_len: int) -> float:
    """Model FLOPs of one step, ``params.training_flops_per_token``'s convention (6 x activated
    matrix parameters, MTP included, plus the attention products) times the tokens."""

    return training_flops_per_token(c, seq_len) * batch_size * seq_len


# ----------------------------------------------------------------------------- the plans
def largest_fitting(peak, usable: float, limit: int = 2**24) -> int:
    """The largest batch whose ``peak(batch)`` (non-decreasing) is at most ``usable`` (0: not even one)."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if peak(middle) <= usable else (low, middle - 1)
    return low


def plan_training(config: ModelConfig, batch_size: int, seq_len: int, *, device: str = "cpu",
                  attention: str = "sdpa", autocast: bool | None = None, fp8: bool = False,
                  device_memory: int | str | None = None, headroom: float | None = None,
                  peak_tflops: float | None = None, mfu: float | None = None, steps: int | None = None,
                  grad_accum: int = 1) -> Plan:
    """Predict the peak memory and the time of training ``config`` at ``batch_size`` x ``seq_len``.

    ``device``: "cpu", "cuda" or "mps" (its kind decides the defaults: bf16 autocast on GPUs, the
    runtime floor on the CPU). ``attention``: "sdpa" (fused, no scores kept) or "eager".
    ``fp8``: linear inputs saved in FP8 (1 byte instead of 2). ``device_memory``: bytes or "24GB";
    with it the plan says whether the run fits and the largest batch that does.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("grad_accum", grad_accum)):
        if not isinstance(value, int) or value < 1:
            raise PlanError(f"{name} must be an integer >= 1, got {value!r}")
    if attention not in ("sdpa", "sdpa_padded", "eager"):
        raise PlanError(f"attention must be sdpa or eager, got {attention!r}")
    kind = device.split(":")[0]
    if kind not in DEFAULT_MFU:
        raise PlanError(f"device must be cpu, cuda or mps, got {device!r}")
    autocast = kind != "cpu" if autocast is None else autocast
    memory = parse_bytes(device_memory) if device_memory is not None else None
    headroom = (0.1 if kind != "cpu" else 0.0) if headroom is None else headroom

    def predict(batch: int) -> Plan:
        p = trainable_parameters(config)
        terms = {"weights (fp32)": 4.0 * p, "gradients (fp32)": 4.0 * p, "AdamW state (fp32 x 2)": 8.0 * p}
        kept = scores_kept(config, kind, attention)
        act, per_layer = activation_bytes(config, batch, seq_len, "eager" if kept else "sdpa", autocast, fp8)
        terms["activations"] = act
        n = batch * seq_len
        transient = 2 * 4 * n * config.vocab_size
        if kept:
            transient = max(transient, 2 * 4 * batch * config.n_heads * seq_len**2)
        transient += max(value for _, value in per_layer)  # the gradients of one layer's activations
        terms["transients"] = transient
        runtime = CPU_RUNTIME_BYTES if kind == "cpu" else 0
        if runtime:
            terms["runtime (interpreter + torch)"] = runtime
        state = terms["weights (fp32)"] + terms["AdamW state (fp32 x 2)"]
        peak = state + max(act + transient, terms["gradients (fp32)"]) + runtime
        notes = []
        if kind == "cpu" and state + terms["AdamW state (fp32 x 2)"] + runtime > peak:
            peak = state + terms["AdamW state (fp32 x 2)"] + runtime
            notes.append("the peak is the checkpoint write (the optimizer state serialised in memory)")
        flops = flops_per_step(config, batch, seq_len) * grad_accum
        tflops = peak_tflops if peak_tflops is not None else DEFAULT_PEAK_TFLOPS[kind]
        use = mfu if mfu is not None else DEFAULT_MFU[kind]
        what = (f"training plan: {n:,} tokens per micro-batch ({batch} x {seq_len}), {p:,} trainable parameters, "
                f"{kind}, {'bf16 autocast' if autocast else 'fp32'}{' + FP8 linears' if fp8 else ''}, "
                f"{attention} attention")
        return Plan(what, terms, peak, per_layer, memory, headroom, None, flops, flops / (tflops * 1e12 * use),
                    steps, n * grad_accum, notes + [f"time assumes {tflops:g} TFLOP/s peak at {use:.0%} MFU"])

    plan = predict(batch_size)
    if memory is not None:
        plan.max_batch_size = largest_fitting(lambda batch: predict(batch).peak, memory * (1 - headroom))
    return plan


def plan_generation(config: ModelConfig, batch_size: int, seq_len: int, *, device: str = "cuda",
                    cache: str = "absorbed", fp8: bool = False, device_memory: int | str | None = None,
                    headroom: float | None = None) -> Plan:
    """Predict the memory of generating up to ``seq_len`` tokens (prompt + output) for ``batch_size``
    sequences: weights in the inference dtype, the KV cache (``absorbed``: latent; ``naive``: per head)."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or value < 1:
            raise PlanError(f"{name} must be an integer >= 1, got {value!r}")
    if cache not in ("absorbed", "naive"):
        raise PlanError(f"cache must be absorbed or naive, got {cache!r}")
    kind = device.split(":")[0]
    counts = count_parameters(config)
    value_bytes = 4 if kind == "cpu" else 2
    weights = counts.bytes_fp8 if fp8 else (counts.total + counts.mtp) * value_bytes
    memory = parse_bytes(device_memory) if device_memory is not None else None
    headroom = (0.1 if kind != "cpu" else 0.0) if headroom is None else headroom

    def predict(batch: int) -> Plan:
        per_token = counts.kv_cache_latent if cache == "absorbed" else counts.kv_cache_per_head
        kv = batch * seq_len * config.n_layers * per_token * value_bytes
        terms = {f"weights ({'FP8 layout' if fp8 else 'fp32' if value_bytes == 4 else 'bf16'})": float(weights),
                 f"KV cache ({'latent' if cache == 'absorbed' else 'per head'})": float(kv),
                 "logits of one step (fp32)": 4.0 * batch * config.vocab_size}
        if kind == "cpu":
            terms["runtime (interpreter + torch)"] = CPU_RUNTIME_BYTES
        return Plan(f"generation plan: batch {batch} x {seq_len} tokens, {kind}, {cache} cache", terms,
                    sum(terms.values()), device_memory=memory, headroom=headroom)

    plan = predict(batch_size)
    if memory is not None:
        plan.max_batch_size = largest_fitting(lambda batch: predict(batch).peak, memory * (1 - headroom))
    return plan
