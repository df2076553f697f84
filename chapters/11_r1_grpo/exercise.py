"""Chapter 11 exercise: GRPO's objective, written as plain functions.

Fill in every function below, then grade your work with

    minideepseek grade 11        (or: pytest tests/exercises/test_11_r1_grpo.py --student)

Notation (DeepSeekMath section 4.1): a prompt q gets a group of G sampled completions
o_1..o_G with rewards r_1..r_G. The G completions of a prompt are adjacent in every batch.
Per-token tensors are (batch, seq), batch = n_prompts * G, seq = the longest completion;
``mask`` (bool, same shape) is True for the real tokens of each completion and False for padding.
"""

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, normalise_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """Outcome-supervision advantages, one per completion.

    rewards: (n_prompts * group_size,) -> (n_prompts * group_size,)
        A_i = (r_i - mean(group)) / (std(group) + eps)    with normalise_std (GRPO)
        A_i =  r_i - mean(group)                          without (Dr. GRPO)
    mean and std are taken over the G completions of the same prompt only; std is the unbiased
    one (torch.std's default). A group whose rewards are all equal gets A = 0.
    """
    raise NotImplementedError("group_advantages: reshape to (n_prompts, G), centre, optionally divide by the std")


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      epsilon: float = 0.2) -> torch.Tensor:
    """The clipped surrogate of every token (to maximise), 0 at padded positions.

    logp, old_logp: (batch, seq) log-probabilities of the sampled tokens under pi_theta and pi_old;
    advantages: (batch,) A_i, shared by all tokens of completion i; mask: (batch, seq) bool.
        rho = exp(logp - old_logp)
        objective = min(rho * A, clip(rho, 1 - epsilon, 1 + epsilon) * A)
    Padded positions may hold any value, even inf or nan: they must give 0 and no nan, in the
    value and in the gradient (mask the log-ratio BEFORE the exp).
    """
    raise NotImplementedError("clipped_objective: ratio, clip, min, and the mask before the exp")


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi_theta || pi_ref) on each sampled token, 0 at padded positions.

    logp, ref_logp, mask: (batch, seq) -> (batch, seq)
        x = ref_logp - logp;   D = exp(x) - x - 1      (>= 0 for every sample)
    """
    raise NotImplementedError("k3_kl: exp(x) - x - 1 with x = ref_logp - logp, masked before the exp")


def grpo_objective(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor, epsilon: float = 0.2, beta: float = 0.04) -> torch.Tensor:
    """J of GRPO (DeepSeekMath eq. 3) for a batch: a scalar to MAXIMISE.

        J = 1/batch * sum_i 1/|o_i| * sum_{t in o_i} [ clipped_objective_it - beta * k3_kl_it ]
    |o_i| is the number of real (masked-in) tokens of completion i. Shapes as above.
    """
    raise NotImplementedError("grpo_objective: clipped objective minus beta * KL per token, mean per sequence, "
                              "then mean")
