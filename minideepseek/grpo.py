"""Group Relative Policy Optimization (GRPO): DeepSeekMath section 4.1, used for DeepSeek-R1.

PPO needs a value network as large as the policy to tell a good action from a lucky
one. GRPO drops it: for each prompt q it samples a **group** of G completions
o_1..o_G from the policy that is being trained (pi_old, frozen while its samples are
used), scores each with a rule-based reward r_i, and uses the group itself as the
baseline. Every token of completion i gets the same advantage

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)                      (DeepSeekMath, outcome supervision)

and the policy maximises the clipped surrogate of PPO minus a KL penalty to a frozen
reference policy pi_ref (the cold-start model), token by token:

    J = 1/G sum_i 1/|o_i| sum_t [ min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i) - beta D_KL,it ]    (GRPO eq. 3)
    rho_it  = pi_theta(o_it | q, o_i,<t) / pi_old(o_it | q, o_i,<t)
    D_KL,it = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1                  (eq. 4, Schulman's "k3" estimator)

The samples of one rollout serve ``inner_steps`` (mu) gradient steps; pi_old is the
policy at the first of them, so rho = 1 there and the clip only acts from the second.

The module reads top-down: the pure functions of the objective (``group_advantages``,
``k3_kl``, ``clipped_surrogate``, ``aggregate``, ``grpo_loss``), then sampling and
per-token log-probabilities with our ``Transformer``, then one GRPO step. Options
from the follow-up work: no std normalisation and a constant-length aggregation
(Dr. GRPO), token-level aggregation and an asymmetric clip (DAPO).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .generation import generate
from .optim import optimizer_step
from .validation import Fields, UserError

RewardFunction = Callable[[str, str], float]
SCALES = ("group", "batch", "none")
AGGREGATIONS = ("sequence", "token", "dr_grpo")


class GRPOError(UserError):
    """A GRPO setting or input that cannot work; the message names it."""


@dataclass(frozen=True)
class GRPOConfig:
    """Hyper-parameters of the GRPO phase (defaults: the 2-core CPU recipe of the R1 chapter).

    prompts_per_step x group_size completions are sampled per step; ``inner_steps`` (mu) gradient
    steps use them. ``scale_rewards``: "group" (GRPO), "batch" (Lite-PPO), "none" (Dr. GRPO).
    ``aggregation``: "sequence" (GRPO's 1/|o_i|), "token" (DAPO), "dr_grpo" (divide by the
    maximum completion length). ``epsilon_high`` > ``epsilon_low`` is DAPO's clip-higher.
    """

    steps: int = 60
    prompts_per_step: int = 16
    group_size: int = 8
    temperature: float = 1.0
    lr: float = 3e-4
    warmup_steps: int = 5  # linear learning-rate warm-up: Adam's first steps move every weight by about lr
    min_lr_ratio: float = 0.1  # then a half cosine down towards this fraction of lr by the last step
    inner_steps: int = 2
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.04
    scale_rewards: str = "group"
    aggregation: str = "sequence"
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check = Fields(self, GRPOError)
        for name in ("steps", "prompts_per_step", "inner_steps"):
            check.integer(name, minimum=1)
        check.integer("warmup_steps", minimum=0)
        check.integer("group_size", minimum=2)  # a group of one has no baseline
        check.number("min_lr_ratio", minimum=0, maximum=1)
        check.number("temperature", above=0)  # GRPO samples
        check.number("lr", above=0)
        check.number("beta", minimum=0)  # NaN would silently drop the KL term: beta > 0 is False for NaN
        check.number("epsilon_low", minimum=0, below=1)
        check.number("epsilon_high", minimum=0)
        check.number("grad_clip", above=0, optional=True)
        check.choice("scale_rewards", SCALES)
        check.choice("aggregation", AGGREGATIONS)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the objective
# --8<-- [start:group_advantages]
def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Each completion's reward relative to its group: A_i = (r_i - mean_group) / (std + eps).

    rewards: (n_prompts * group_size,), the G completions of a prompt next to each other -> (same,)
    scale: "group" divides by the group's std (GRPO), "batch" by the whole batch's std, "none" not
    at all (Dr. GRPO: the std up-weights groups that are nearly all right or all wrong).
    The std is the unbiased one (Bessel), as in TRL. A group whose rewards are all equal gets A = 0.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise GRPOError(f"rewards must be (n_prompts * group_size,) = multiple of {group_size}, "
                        f"got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.std() + eps)
    elif scale != "none":
        raise GRPOError(f"scale must be one of {SCALES}, got {scale!r}")
    return centred.flatten()
# --8<-- [end:group_advantages]


# --8<-- [start:k3_kl]
def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate on the sampled token (GRPO eq. 4, Schulman's k3):

        D = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1 = exp(x) - x - 1,   x = ref_logp - logp

    Unbiased for tokens sampled from pi_theta, and >= 0 for every sample (k1 = -x can be negative).
    logp, ref_logp, mask: (batch, seq) -> (batch, seq), 0 where mask is False. The log-ratio is masked
    *before* exp, so a padded position never makes inf * 0 = NaN, and clamped so that exp cannot overflow.
    """
    x = torch.where(mask, ref_logp - logp, 0.0).clamp(-20.0, 20.0)
    return torch.exp(x) - x - 1
# --8<-- [end:k3_kl]


# --8<-- [start:clipped_surrogate]
def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      epsilon_low: float = 0.2, epsilon_high: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per token, min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), to maximise.

    logp, old_logp: (batch, seq) log-probabilities of the sampled tokens under pi_theta and pi_old;
    advantages: (batch,) one per completion, shared by its tokens; mask: (batch, seq) bool.
    -> objective (batch, seq), 0 where masked; clipped (batch, seq) bool, True where the clip is the
    active side of the min (the ratio left the trust region in the direction the advantage pushes).
    """
    log_ratio = torch.where(mask, logp - old_logp, 0.0).clamp(-20.0, 20.0)  # mask before exp: no inf * 0
    ratio = torch.exp(log_ratio)
    a = advantages.unsqueeze(1)
    objective = torch.minimum(ratio * a, ratio.clamp(1 - epsilon_low, 1 + epsilon_high) * a)
    clipped = mask & (((ratio < 1 - epsilon_low) & (a < 0)) | ((ratio > 1 + epsilon_high) & (a > 0)))
    return torch.where(mask, objective, 0.0), clipped
# --8<-- [end:clipped_surrogate]


# --8<-- [start:aggregate]
def aggregate(per_token: torch.Tensor, mask: torch.Tensor, kind: str = "sequence",
              max_len: int | None = None) -> torch.Tensor:
    """Reduce per-token losses (batch, seq) to a scalar over the masked tokens.

    "sequence": mean over each completion's tokens, then over completions (GRPO's 1/|o_i|: a short
                completion's tokens weigh more, Dr. GRPO's length bias);
    "token":    sum over all tokens / number of tokens (DAPO: every token weighs the same);
    "dr_grpo":  sum over all tokens / (batch * max_len), a constant (Dr. GRPO; max_len defaults to seq).
    """
    per_token = torch.where(mask, per_token, 0.0)
    if kind == "sequence":
        return (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if kind == "token":
        return per_token.sum() / mask.sum().clamp(min=1)
    if kind == "dr_grpo":
        return per_token.sum() / (per_token.size(0) * (max_len or per_token.size(1)))
    raise GRPOError(f"aggregation must be one of {AGGREGATIONS}, got {kind!r}")
# --8<-- [end:aggregate]


# --8<-- [start:grpo_loss]
def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, config: GRPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """-J of GRPO eq. 3 for one batch of completions, and what to log (KL, clip fraction).

    logp: (batch, seq) with gradient; old_logp, ref_logp: (batch, seq) without (ref_logp None when beta = 0);
    advantages: (batch,); mask: (batch, seq) bool, the completion tokens up to and including <eos>.
    """
    objective, clipped = clipped_surrogate(logp, old_logp, advantages, mask, config.epsilon_low, config.epsilon_high)
    per_token = -objective
    kl = k3_kl(logp, ref_logp, mask) if ref_logp is not None else torch.zeros_like(logp)
    if config.beta > 0:
        per_token = per_token + config.beta * kl
    loss = aggregate(per_token, mask, config.aggregation, mask.size(1))
    n_tokens = mask.sum().clamp(min=1)
    stats = {"kl": (kl.detach().sum() / n_tokens).item(), "clip_fraction": (clipped.sum() / n_tokens).item()}
    return loss, stats
# --8<-- [end:grpo_loss]


# ----------------------------------------------------------------------------- sampling and log-probs
def completion_mask(completions: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True for each completion's tokens up to and including its first <eos>; False for the padding after it.

    completions: (batch, seq) -> (batch, seq) bool. A completion without <eos> (truncated) is all True.
    """
    eos_before = (completions == eos_id).long().cumsum(dim=1) - (completions == eos_id).long()
    return eos_before == 0


def sample_groups(model: nn.Module, prompts: torch.Tensor, group_size: int, max_new_tokens: int,
                  temperature: float, eos_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G completions per prompt, batched, with the KV cache (``generation.generate``).

    prompts: (n_prompts, prompt_len), all the same length -> (prompts repeated: (n_prompts * G, prompt_len),
    completions: (n_prompts * G, max_new_tokens) padded with <eos>); the G copies of a prompt are adjacent.
    """
    repeated = prompts.repeat_interleave(group_size, dim=0)
    sequences = generate(model, repeated, max_new_tokens, temperature=temperature, eos_id=eos_id, seed=seed)
    completions = sequences[:, prompts.size(1):]
    if completions.size(1) < max_new_tokens:  # every row stopped early: generate returns only what was produced
        completions = F.pad(completions, (0, max_new_tokens - completions.size(1)), value=eos_id)
    return repeated, completions


# --8<-- [start:token_logprobs]
def token_logprobs(model: nn.Module, prompts: torch.Tensor, completions: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """log pi(o_t | q, o_<t) of every completion token, from one forward pass over prompt + completion.

    prompts: (batch, prompt_len); completions: (batch, seq) -> (batch, seq) float32.
    The logits are divided by the sampling temperature, so these are the probabilities the tokens
    were drawn with. Position i of the model predicts token i + 1, hence the shift by one.
    """
    sequences = torch.cat([prompts, completions], dim=1)
    logits = model(sequences[:, :-1])[:, prompts.size(1) - 1:].float() / temperature
    return logits.log_softmax(dim=-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)
# --8<-- [end:token_logprobs]


def score(prompt_texts: list[str], completion_texts: list[str],
          rewards: dict[str, tuple[RewardFunction, float]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the reward functions for each (prompt, completion), and each function's values.

    rewards: name -> (function(prompt, completion) -> float, weight) -> total (batch,), {name: (batch,)}
    """
    parts = {name: torch.tensor([fn(p, c) for p, c in zip(prompt_texts, completion_texts)])
             for name, (fn, _) in rewards.items()}
    total = sum(weight * parts[name] for name, (_, weight) in rewards.items())
    return total, parts


# ----------------------------------------------------------------------------- one GRPO step
@dataclass
class Rollout:
    """The samples of one step. prompts: (B, prompt_len); completions, mask: (B, seq); rewards,
    advantages, truncated (no <eos> within the length limit): (B,); parts: reward name -> (B,);
    B = n_prompts * group_size, the G = group_size completions of a prompt adjacent."""

    prompts: torch.Tensor
    completions: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    parts: dict[str, torch.Tensor]
    advantages: torch.Tensor
    truncated: torch.Tensor
    group_size: int


def rollout(model: nn.Module, prompts: torch.Tensor, config: GRPOConfig, max_new_tokens: int, eos_id: int,
            decode: Callable[[torch.Tensor], str], rewards: dict[str, tuple[RewardFunction, float]],
            seed: int) -> Rollout:
    """Sample the groups, score them with the reward functions, and compute the advantages."""
    repeated, completions = sample_groups(model, prompts, config.group_size, max_new_tokens,
                                          config.temperature, eos_id, seed)
    total, parts = score([decode(p) for p in repeated], [decode(c) for c in completions], rewards)
    return Rollout(repeated, completions, completion_mask(completions, eos_id), total, parts,
                   group_advantages(total, config.group_size, config.scale_rewards),
                   ~(completions == eos_id).any(dim=1), config.group_size)


# --8<-- [start:grpo_step]
def grpo_step(policy: nn.Module, reference: nn.Module | None, optimizer: torch.optim.Optimizer, batch: Rollout,
              config: GRPOConfig) -> dict[str, float]:
    """``inner_steps`` gradient steps of GRPO on one rollout; returns the step's metrics.

    pi_old is the policy as it sampled ``batch``: its log-probs are those of the first inner step,
    taken before any update (so the ratio is exactly 1 there). pi_ref is ``reference``, frozen.
    """
    if config.beta > 0 and reference is None:
        raise GRPOError(f"GRPOConfig.beta = {config.beta} needs a reference model (or set beta = 0)")
    ref_logp = None
    if config.beta > 0:
        with torch.no_grad():
            ref_logp = token_logprobs(reference, batch.prompts, batch.completions, config.temperature)
    old_logp, logged = None, []
    for _ in range(config.inner_steps):
        logp = token_logprobs(policy, batch.prompts, batch.completions, config.temperature)
        if old_logp is None:
            old_logp = logp.detach()
        loss, stats = grpo_loss(logp, old_logp, ref_logp, batch.advantages, batch.mask, config)
        loss.backward()
        # DeepSeek-V3's aux-loss-free balancing keeps running during RL: the step moves the biases too.
        grad_norm, _ = optimizer_step(policy, optimizer, config.grad_clip, loss=loss.detach())
        stats["grad_norm"] = grad_norm.item()
        logged.append(stats | {"loss": loss.item()})
    return rollout_metrics(batch) | {k: sum(s[k] for s in logged) / len(logged) for k in logged[0]}
# --8<-- [end:grpo_step]


def rollout_metrics(batch: Rollout) -> dict[str, float]:
    """Mean reward (and per reward function), completion length, truncation and zero-advantage groups."""
    groups = batch.rewards.view(-1, batch.group_size)
    return {"reward": batch.rewards.mean().item(),
            **{f"reward_{name}": values.mean().item() for name, values in batch.parts.items()},
            "completion_length": batch.mask.sum(dim=1).float().mean().item(),
            "truncated": batch.truncated.float().mean().item(),
            "frac_zero_std": (groups.std(dim=1) == 0).float().mean().item()}
