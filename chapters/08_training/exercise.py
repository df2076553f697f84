"""Chapter 08 exercise: the pieces of a training step, written as plain functions.

Fill in every function below, then grade your work with

    minideepseek grade 08        (or: pytest tests/exercises/test_08_training.py --student)

Tensors are passed in and returned; nothing is modified in place unless the docstring says so.
"""

import torch


def learning_rate(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0 for the first step).

    Linear warm-up: lr = max_lr * (step + 1) / warmup_steps while step < warmup_steps.
    Then a half cosine from max_lr (at step = warmup_steps) down to min_lr (at step = total_steps):
        p = (step - warmup_steps) / (total_steps - warmup_steps), clipped to at most 1
        lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2
    """
    raise NotImplementedError("learning_rate: linear warm-up, then cosine decay to min_lr")


def pack_windows(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a token stream into training windows of seq_len + 1 tokens.

    tokens: (n,) int64 -> (n_windows, seq_len + 1) with window i = tokens[i * seq_len : i * seq_len + seq_len + 1].
    Neighbouring windows share one token (the last target of one is the first input of the next), so every
    token after the first is a target exactly once. n_windows = (n - 1) // seq_len; leftover tokens are dropped.
    """
    raise NotImplementedError("pack_windows: windows of seq_len + 1 that overlap by one token")


def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradient clipping as torch.nn.utils.clip_grad_norm_ does it, without modifying ``grads``.

    total = sqrt(sum over all tensors of sum(g ** 2)), the norm of all gradients as one vector.
    If total > max_norm, every gradient is multiplied by max_norm / (total + 1e-6); otherwise unchanged.
    Returns (the new gradients, total).
    """
    raise NotImplementedError("clip_by_global_norm: one norm over all gradients, one common scale")


def adamw_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
               lr: float, betas: tuple[float, float], eps: float, weight_decay: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update of one tensor (Loshchilov & Hutter, decoupled weight decay), as torch.optim.AdamW.

    step: the number of this update, 1 for the first (it sets the bias corrections).
        m = beta1 * exp_avg + (1 - beta1) * grad
        v = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
        m_hat = m / (1 - beta1 ** step);  v_hat = v / (1 - beta2 ** step)
        new_param = param - lr * weight_decay * param - lr * m_hat / (sqrt(v_hat) + eps)
    Returns (new_param, m, v).
    """
    raise NotImplementedError("adamw_step: moments, bias correction, decoupled weight decay")


def decay_split(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    """Which trainable parameters get weight decay: (names with decay, names without).

    Matrices (2 or more dimensions: projections, experts, embeddings, gate weights) are decayed;
    vectors (the norms' gains) are not; parameters with requires_grad=False (the MoE gate biases,
    moved by the balancing rule, not by gradients) are in neither set.
    """
    raise NotImplementedError("decay_split: decay matrices, not gains, and leave the gate biases out")


def v3_learning_rate(step: int, tokens: float) -> float:
    """DeepSeek-V3's pre-training learning rate (report section 4.2) at optimizer step ``step`` (0 for the first),
    after ``tokens`` training tokens:

    * warm-up, while step < 2000: lr = 2.2e-4 * (step + 1) / 2000;
    * then 2.2e-4, constant, until 10T tokens (tokens < 10e12);
    * then a cosine decay to 2.2e-5 (10% of the peak) over the next 4.3T tokens:
          p = (tokens - 10e12) / 4.3e12,  lr = 2.2e-5 + (2.2e-4 - 2.2e-5) * (1 + cos(pi p)) / 2;
    * then 2.2e-5 for 333B tokens (until 14.633T), and 7.3e-6 for the last 167B (from 14.633T on, up to
      14.8T and beyond).
    """
    raise NotImplementedError("v3_learning_rate: warm-up by steps, then constant, cosine and two steps by tokens")


def v3_batch_size(tokens: float) -> int:
    """V3's batch size in sequences after ``tokens`` training tokens (report section 4.2): "gradually increased
    from 3072 to 15360 in the training of the first 469B tokens, and then keeps 15360".

    The report gives the ends, not the curve; here it grows by 3072 every 469B / 4 tokens:
    3072 * (1 + floor(4 * tokens / 469e9)), at most 15360: 3072, 6144, 9216, 12288, then 15360 from 469B on.
    """
    raise NotImplementedError("v3_batch_size: 3072 more sequences every 469B / 4 tokens, up to 15360")


def bias_update_accumulated(bias: torch.Tensor, micro_batch_indices: list[torch.Tensor], gamma: float
                            ) -> torch.Tensor:
    """The auxiliary-loss-free bias update after one optimizer step made of several gradient-accumulation
    micro-batches (report section 2.1.2; chapter 04's sign rule).

    bias: (experts,) float32; micro_batch_indices[j]: (tokens_j, k) int64, the experts chosen for the tokens
    of micro-batch j. The load of an expert is the number of (token, expert) choices over the WHOLE step, all
    micro-batches together (an expert nobody chose has load 0). The bias then moves ONCE:
    bias_i + gamma * sign(mean load - load_i). Returns the new bias; ``bias`` is not modified.
    """
    raise NotImplementedError("bias_update_accumulated: one load over every micro-batch, one sign step")
