"""DeepSeek-R1's recipe in miniature: cold-start SFT, then GRPO with rule-based rewards.

``run_r1(R1Config(...))`` runs the whole pipeline on the built-in verifiable task
(``reasoning_task.py``: column addition, worked solutions from a buggy teacher) with our
own Transformer (MLA + DeepSeekMoE, no MTP):

    1. cold start   SFT of a fresh model on the teacher's formatted worked solutions;
                    it learns the <think>/<answer> template, and the teacher's bug
    2. GRPO         reinforcement learning from the accuracy and format rewards
                    (``grpo.py``), against the frozen SFT model as the KL reference
    3. control      the SFT model trained on, by SFT only, for as long as GRPO ran:
                    proof that the gain comes from the rewards, not from more training
    4. distillation a smaller student trained by SFT on the GRPO policy's correct
                    samples, as R1 was distilled into small dense models

Every stage is scored by greedy decoding on held-out problems that neither SFT nor RL
ever sees. The run folder receives:

    metrics.jsonl   one record per GRPO step (reward, accuracy, format rate, KL, clip fraction,
                    completion length, zero-std groups ...; held-out accuracy every eval_interval)
    sft.jsonl       the SFT and control losses
    eval.json       held-out accuracy of the SFT, GRPO, control (and student) models, problems, seed, times
    training.png, heldout.png
    sft_model/, grpo_model/   the two policies (official-format safetensors, ``load_pretrained``)

The run is written into a temporary folder beside ``out_dir`` and moved into place when it
ends: a run that fails (a bad setting, a NaN, Ctrl-C) leaves a previous run in ``out_dir`` as it
was, and a rerun replaces it whole. A folder that holds anything else is refused unless
``overwrite``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from .checkpoint import load_pretrained, save_pretrained
from .config import ModelConfig
from .device import deterministic_kernels
from .generation import generate
from .grpo import GRPOConfig, aggregate, completion_mask, grpo_step, rollout, token_logprobs
from .model import Transformer
from .optim import learning_rate, optimizer_step
from .reasoning_task import DEFAULT_REWARDS, EOS_ID, VOCAB, AdditionTask, accuracy_reward, carry_columns, decode, \
    encode, extract_answer, format_reward, target
from .run_plots import write_r1_plots
from .runfolder import append_jsonl, atomic_path, check_destination, write_json
from .validation import Fields, UserError

# The policies: tiny-class overrides of the "tiny" preset. Every DeepSeek-V3 feature stays on (MLA with a
# low-rank query, DeepSeekMoE with shared + routed experts, sigmoid routing with the balancing bias, group-
# limited routing); MTP is off, since RL trains only the next-token head.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=64, n_layers=2, n_dense_layers=1, inter_dim=256, n_heads=4, q_lora_rank=32, kv_lora_rank=32,
                 qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8, n_shared_experts=1,
                 n_activated_experts=2, n_expert_groups=4, n_limited_groups=2, moe_inter_dim=64),
    # The distillation student: dense (no MoE layer), as R1 was distilled into dense Qwen and Llama models;
    # 43 % of the policy's parameters.
    "student": dict(dim=64, n_layers=2, n_dense_layers=2, inter_dim=128, n_heads=4, q_lora_rank=32, kv_lora_rank=32,
                    qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
}


R1_FILES = ("r1_config.json", "metrics.jsonl", "sft.jsonl", "eval.json", "training.png", "heldout.png",
            "sft_model", "grpo_model")  # what a run writes: a folder holding only these is a previous run


class R1Error(UserError):
    """An R1 pipeline setting that cannot work; the message names it."""


def task_model_config(size: str, task: AdditionTask) -> ModelConfig:
    """The ModelConfig of a policy for ``task``: ``MODEL_SIZES[size]`` over the tiny preset, no MTP."""
    if size not in MODEL_SIZES:
        raise R1Error(f"model size {size!r} unknown; choose one of {sorted(MODEL_SIZES)}")
    seq_len = task.prompt_len + task.max_completion_len
    return ModelConfig.from_preset("tiny", vocab_size=len(VOCAB), n_mtp_layers=0, max_seq_len=seq_len,
                                   original_seq_len=seq_len, max_batch_size=4096, **MODEL_SIZES[size])


@dataclass
class R1Config:
    """Every knob of ``minideepseek grpo``. The defaults: 2-digit addition, about two minutes of one CPU core."""

    out_dir: str = "runs/grpo"
    seed: int = 0
    model: str = "tiny"
    init: str | None = None  # a checkpoint folder to start from (e.g. a previous run's sft_model) instead of scratch
    # the task
    n_digits: int = 2
    carry_bug: float = 0.7
    n_heldout: int | None = None  # held-out problems; None: 2000, or a fifth of them for 1 digit (100 problems)
    # cold start
    sft_examples: int = 2000
    sft_steps: int = 400
    sft_batch_size: int = 64
    sft_lr: float = 2e-3
    # reinforcement learning
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval_interval: int = 10  # GRPO steps between held-out evaluations
    # comparisons
    control: bool = True
    distill: bool = True
    distill_prompts: int = 4000
    student: str = "student"
    save_models: bool = True
    progress: bool = True
    threads: int = 1  # CPU threads (torch.set_num_threads): a run is bit-identical for a given count

    def __post_init__(self) -> None:
        if isinstance(self.grpo, dict):
            self.grpo = GRPOConfig(**self.grpo)
        if self.n_heldout is None and isinstance(self.n_digits, int):
            self.n_heldout = min(2000, 10 ** (2 * self.n_digits) // 5)
        check = Fields(self, R1Error)
        check.text("out_dir")
        check.text("init", optional=True)
        check.integer("seed", minimum=0, maximum=2**32 - 1)  # the rollouts are seeded seed * 1_000_003 + step
        for name in ("sft_examples", "sft_batch_size", "eval_interval", "distill_prompts", "threads"):
            check.integer(name, minimum=1)
        check.integer("sft_steps", minimum=0)  # 0: R1-Zero, RL without a cold start
        check.number("sft_lr", above=0)
        for name in ("model", "student"):
            check.choice(name, sorted(MODEL_SIZES))
        for name in ("control", "distill", "save_models", "progress"):
            check.boolean(name)
        if not isinstance(self.grpo, GRPOConfig):
            check.fail("grpo", "a GRPOConfig", self.grpo)
        self.task  # noqa: B018  AdditionTask checks n_digits, carry_bug and n_heldout now, not after SFT

    @property
    def task(self) -> AdditionTask:
        return AdditionTask(self.n_digits, self.carry_bug, self.n_heldout, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- data
@dataclass
class Examples:
    """Tokenised (prompt, completion) pairs. prompts: (n, prompt_len); completions: (n, max_completion_len)
    padded with <eos>; mask: (n, max_completion_len), the completion tokens and their closing <eos>."""

    prompts: torch.Tensor
    completions: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_text(cls, task: AdditionTask, pairs: list[tuple[str, str]]) -> "Examples":
        prompts = torch.tensor([encode(p) for p, _ in pairs])
        completions = torch.full((len(pairs), task.max_completion_len), EOS_ID)
        for row, (_, completion) in enumerate(pairs):
            ids = encode(completion)
            completions[row, :len(ids)] = torch.tensor(ids)
        return cls(prompts, completions, completion_mask(completions, EOS_ID))

    def __len__(self) -> int:
        return self.prompts.size(0)


def teacher_examples(task: AdditionTask, problems: list[tuple[int, int]], seed: int) -> Examples:
    """The cold-start data: one buggy-teacher worked solution per problem."""
    rng = random.Random(seed)
    return Examples.from_text(task, [(task.prompt(a, b), task.teacher(a, b, rng)) for a, b in problems])


def prompt_ids(task: AdditionTask, problems: list[tuple[int, int]]) -> torch.Tensor:
    """(n, prompt_len) token ids of the problems' prompts."""
    return torch.tensor([encode(task.prompt(a, b)) for a, b in problems])


# ----------------------------------------------------------------------------- SFT
# --8<-- [start:sft_step]
def sft_step(model: Transformer, optimizer: torch.optim.Optimizer, data: Examples, generator: torch.Generator,
             batch_size: int) -> float:
    """One step of supervised fine-tuning: maximise log pi(completion | prompt), prompt tokens unscored.

    In DeepSeekMath's unified view this is the policy gradient with every token's coefficient
    equal to 1: the same ``token_logprobs`` as GRPO, without advantages, ratio or KL.
    """
    rows = torch.randint(len(data), (batch_size,), generator=generator)
    logp = token_logprobs(model, data.prompts[rows], data.completions[rows])
    loss = -aggregate(logp, data.mask[rows], "token")
    loss.backward()
    optimizer_step(model, optimizer, grad_clip=1.0, loss=loss.detach())  # stops at a NaN loss or gradient
    return loss.item()
# --8<-- [end:sft_step]


def adamw(model: Transformer, lr: float) -> torch.optim.AdamW:
    """AdamW over the trained parameters (the gate biases move by the balancing rule, not by gradient)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                             weight_decay=0.0)


def sft(model: Transformer, data: Examples, steps: int | None, batch_size: int, lr: float, seed: int,
        seconds: float | None = None, log: Callable[[dict], None] | None = None, desc: str = "SFT",
        progress: bool = True) -> int:
    """Fine-tune for ``steps`` steps, or (``steps=None``) until ``seconds`` of wall time; returns the steps done.

    Constant learning rate after a 20-step warm-up.
    """
    optimizer = adamw(model, lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    began, step = time.perf_counter(), 0
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, mininterval=1.0, leave=False)
    while (step < steps) if steps is not None else (time.perf_counter() - began < seconds):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        loss = sft_step(model, optimizer, data, generator, batch_size)
        step += 1
        bar.update(1)
        if log is not None and (step % 10 == 0 or step == steps):
            log({"phase": desc, "step": step, "loss": loss, "seconds": time.perf_counter() - began})
    bar.close()
    return step


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def sample_completions(model: Transformer, task: AdditionTask, problems: list[tuple[int, int]], temperature: float,
                       seed: int = 0, samples: int = 1, batch_size: int = 1000,
                       top_p: float | None = None) -> list[tuple[str, str]]:
    """(prompt, completion) texts, ``samples`` per problem (adjacent), decoded with the KV cache.

    At most ``batch_size`` completions (and the model's ``max_batch_size``) per ``generate`` call; the
    call that starts at problem i is seeded ``seed + i``. temperature 0: greedy. top_p: nucleus sampling.
    """
    per_call = max(1, min(batch_size, model.config.max_batch_size) // samples)  # problems per generate call
    pairs = []
    for start in range(0, len(problems), per_call):
        prompts = prompt_ids(task, problems[start:start + per_call]).repeat_interleave(samples, dim=0)
        out = generate(model, prompts, task.max_completion_len, temperature=temperature, top_p=top_p, eos_id=EOS_ID,
                       seed=seed + start)
        pairs += [(decode(p), decode(c)) for p, c in zip(prompts, out[:, prompts.size(1):])]
    return pairs


@torch.no_grad()
def evaluate(model: Transformer, task: AdditionTask, problems: list[tuple[int, int]],
             batch_size: int = 1000) -> dict[str, float]:
    """Greedy decoding on ``problems``: accuracy, format rate, accuracy on carry / no-carry problems, length."""
    pairs = sample_completions(model, task, problems, temperature=0.0, batch_size=batch_size)
    correct = [accuracy_reward(prompt, completion) for prompt, completion in pairs]
    formatted = [format_reward(prompt, completion) for prompt, completion in pairs]
    lengths = [len(encode(completion)) for _, completion in pairs]
    carry = [bool(carry_columns(a, b, task.n_digits)) for a, b in problems]
    n = len(problems)
    with_carry = [c for c, k in zip(correct, carry) if k]
    without = [c for c, k in zip(correct, carry) if not k]
    return {"accuracy": sum(correct) / n, "format_rate": sum(formatted) / n,
            "carry_accuracy": sum(with_carry) / max(1, len(with_carry)),
            "no_carry_accuracy": sum(without) / max(1, len(without)),
            "completion_length": sum(lengths) / n, "n_problems": n}


def pass_at_k_estimate(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k from n samples of which ``correct`` are right (Chen et al., 2021, eq. 1):
    the probability that k of the n, drawn without replacement, contain at least one right answer,
    1 - C(n - c, k) / C(n, k)."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise R1Error(f"pass@k needs 0 <= correct <= n and 1 <= k <= n, got n={n}, correct={correct}, k={k}")
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


@torch.no_grad()
def pass_at_k(model: Transformer, task: AdditionTask, problems: list[tuple[int, int]], n_samples: int = 8,
              ks: tuple[int, ...] = (1, 2, 4, 8), seed: int = 0, batch_size: int = 2000) -> dict[int, float]:
    """{k: pass@k} over ``problems``, from ``n_samples`` completions per problem sampled at temperature 1
    (``batch_size`` completions per ``generate`` call).

    pass@1 is the expected accuracy of one sample; pass@8, whether any of 8 samples is right, measures
    what the policy *can* answer. RL that only sharpens the distribution raises the first towards the
    second without raising the second (DeepSeekMath section 5.2.2, Figure 7).
    """
    pairs = sample_completions(model, task, problems, 1.0, seed, n_samples, batch_size)
    right = [accuracy_reward(prompt, completion) for prompt, completion in pairs]
    counts = [int(sum(right[i:i + n_samples])) for i in range(0, len(right), n_samples)]
    return {k: sum(pass_at_k_estimate(n_samples, c, k) for c in counts) / len(counts) for k in ks}


@torch.no_grad()
def r1_protocol(model: Transformer, task: AdditionTask, problems: list[tuple[int, int]], k: int = 16,
                temperature: float = 0.6, top_p: float = 0.95, seed: int = 0,
                batch_size: int = 2000) -> dict[str, float]:
    """DeepSeek-R1's evaluation protocol on the task: k samples per problem at temperature 0.6, top-p 0.95.

    pass@1 is the mean accuracy of the k samples (R1 section 3's "pass@1 estimated from k responses",
    which is less noisy than one greedy answer); cons@k is the accuracy of the answer most of the k
    samples give (a majority vote over the parsed answers; ties go to the answer seen first;
    malformed completions do not vote). Also returns the format rate and mean length of the samples.
    """
    pairs = sample_completions(model, task, problems, temperature, seed, k, batch_size, top_p=top_p)
    right = [accuracy_reward(prompt, completion) for prompt, completion in pairs]
    consensus = 0
    for i in range(0, len(pairs), k):
        votes: dict[str, int] = {}
        for _, completion in pairs[i:i + k]:
            answer = extract_answer(completion)
            if answer is not None:
                votes[answer] = votes.get(answer, 0) + 1
        if votes and max(votes, key=votes.get) == target(pairs[i][0]):
            consensus += 1
    n = len(problems)
    return {"pass@1": sum(right) / len(right), f"cons@{k}": consensus / n,
            "format_rate": sum(format_reward(p, c) for p, c in pairs) / len(pairs),
            "completion_length": sum(len(encode(c)) for _, c in pairs) / len(pairs), "k": k,
            "temperature": temperature, "top_p": top_p, "n_problems": n}


# ----------------------------------------------------------------------------- GRPO
def train_grpo(policy: Transformer, task: AdditionTask, problems: list[tuple[int, int]], config: GRPOConfig,
               seed: int, log: Callable[[dict], None] | None = None,
               evaluate_every: tuple[int, Callable[[Transformer], dict]] | None = None,
               rewards=DEFAULT_REWARDS, progress: bool = True) -> float:
    """GRPO from ``policy`` (trained in place) with the frozen copy it starts as for reference.

    Each step samples ``prompts_per_step`` problems, G completions each, and runs ``grpo_step``. The
    learning rate rises linearly over ``warmup_steps`` steps, then follows a half cosine down to
    ``min_lr_ratio * lr`` (``train.learning_rate``, the pre-training schedule): late in the run most
    groups are solved, the few informative ones make a noisy gradient, and a smaller step keeps the
    policy from drifting off what it has learned.
    ``evaluate_every``: (interval, function(policy) -> dict) merged into that step's record.
    Returns the wall time of the GRPO steps themselves (evaluations excluded).
    """
    reference = copy.deepcopy(policy).eval().requires_grad_(False) if config.beta > 0 else None
    optimizer = adamw(policy, config.lr)
    generator = torch.Generator().manual_seed(seed)
    prompts = prompt_ids(task, problems)
    training_seconds = 0.0
    bar = tqdm(range(1, config.steps + 1), desc="GRPO", unit="step", disable=not progress, mininterval=1.0,
               leave=False)
    for step in bar:
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, config.lr, config.lr * config.min_lr_ratio, config.warmup_steps,
                                        config.steps)
        rows = torch.randint(len(problems), (config.prompts_per_step,), generator=generator)
        batch = rollout(policy, prompts[rows], config, task.max_completion_len, EOS_ID, decode, rewards,
                        seed=seed * 1_000_003 + step)
        policy.train()
        record = grpo_step(policy, reference, optimizer, batch, config)
        training_seconds += time.perf_counter() - began
        record = {"step": step, "seconds": training_seconds, **record}
        if "reward_accuracy" in record:  # the names the metrics.jsonl asks for
            record["accuracy"] = record.pop("reward_accuracy")
        if "reward_format" in record:
            record["format_rate"] = record.pop("reward_format")
        if evaluate_every is not None and (step % evaluate_every[0] == 0 or step == config.steps):
            record |= {f"heldout_{k}": v for k, v in evaluate_every[1](policy).items() if k != "n_problems"}
        bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.3f}")
        if log is not None:
            log(record)
    return training_seconds


# ----------------------------------------------------------------------------- the pipeline
def build_policy(size: str, task: AdditionTask, seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(task_model_config(size, task))


def correct_samples(policy: Transformer, task: AdditionTask, problems: list[tuple[int, int]], seed: int) -> Examples:
    """Rejection sampling: one completion per problem at temperature 1, kept only if the answer is right.

    The problems are sampled in one ``generate`` call where the model's ``max_batch_size`` allows."""
    pairs = sample_completions(policy, task, problems, 1.0, seed, batch_size=len(problems))
    return Examples.from_text(task, [(p, c) for p, c in pairs if accuracy_reward(p, c) == 1.0])


def run_r1(config: R1Config, overwrite: bool = False) -> dict[str, Any]:
    """The whole pipeline (see the module docstring); returns what it writes to eval.json.

    ``out_dir`` may hold a previous run, which a successful run replaces; anything else is refused
    unless ``overwrite`` (which replaces the folder whole).
    """
    check_destination(config.out_dir, R1_FILES, overwrite)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with deterministic_kernels(torch.device("cpu")), atomic_path(config.out_dir, directory=True) as staging:
            return _run(config, staging)
    finally:
        torch.set_num_threads(threads)


def _run(config: R1Config, run_dir: Path) -> dict[str, Any]:
    """The pipeline, writing into ``run_dir`` (the staging folder that becomes ``config.out_dir``)."""
    task = config.task
    train_problems, heldout = task.split()
    write_json(run_dir / "r1_config.json", config.to_dict())

    def logger(name: str) -> Callable[[dict], None]:
        return lambda record: append_jsonl(run_dir / name, record)

    evaluations: list[dict[str, float]] = []

    def heldout_eval(model: Transformer) -> dict[str, float]:
        evaluations.append(evaluate(model, task, heldout))
        return evaluations[-1]

    results: dict[str, Any] = {"task": dataclasses.asdict(task), "n_problems": len(heldout), "seed": config.seed,
                               "seconds": {}}
    began = time.perf_counter()

    # 1. cold start (sft_steps = 0: R1-Zero, reinforcement learning straight from the initial model)
    cold_start = teacher_examples(task, train_problems[:config.sft_examples], config.seed)
    policy = build_policy(config.model, task, config.seed) if config.init is None else load_policy(config.init, task)
    tick = time.perf_counter()
    if config.sft_steps > 0:
        sft(policy, cold_start, config.sft_steps, config.sft_batch_size, config.sft_lr, config.seed,
            log=logger("sft.jsonl"), progress=config.progress)
    results["seconds"]["sft"] = time.perf_counter() - tick
    results["sft"] = heldout_eval(policy)
    sft_state = copy.deepcopy(policy.state_dict())
    if config.save_models:
        save_policy(policy, run_dir / "sft_model")
    logger("metrics.jsonl")({"step": 0, "seconds": 0.0, **{f"heldout_{k}": v for k, v in results["sft"].items()
                                                            if k != "n_problems"}})

    # 2. GRPO
    grpo_seconds = train_grpo(policy, task, train_problems, config.grpo, config.seed, log=logger("metrics.jsonl"),
                              evaluate_every=(config.eval_interval, heldout_eval), progress=config.progress)
    results["seconds"]["grpo"] = grpo_seconds
    results["grpo"] = evaluations[-1]  # train_grpo evaluates the final policy at its last step
    if config.save_models:
        save_policy(policy, run_dir / "grpo_model")

    # 3. the SFT-only control, trained for GRPO's wall time
    if config.control:
        control = copy.deepcopy(policy)
        control.load_state_dict(sft_state)
        steps = sft(control, cold_start, None, config.sft_batch_size, config.sft_lr, config.seed + 1,
                    seconds=grpo_seconds, log=logger("sft.jsonl"), desc="control", progress=config.progress)
        results["control"] = heldout_eval(control) | {"extra_sft_steps": steps}
        results["seconds"]["control"] = grpo_seconds

    # 4. distillation into a smaller student
    if config.distill:
        tick = time.perf_counter()
        distilled = correct_samples(policy, task, train_problems[:config.distill_prompts], config.seed)
        if len(distilled) == 0:
            results["student_skipped"] = "the GRPO policy answered none of the distillation prompts correctly"
        else:
            student = build_policy(config.student, task, config.seed)
            sft(student, distilled, max(config.sft_steps, 1), config.sft_batch_size, config.sft_lr, config.seed,
                log=logger("sft.jsonl"), desc="distill", progress=config.progress)
            results["student"] = heldout_eval(student) | {"distillation_examples": len(distilled),
                                                          "parameters": sum(p.numel() for p in student.parameters())}
        results["seconds"]["distill"] = time.perf_counter() - tick

    results["parameters"] = sum(p.numel() for p in policy.parameters())
    results["seconds"]["total"] = time.perf_counter() - began
    write_json(run_dir / "eval.json", results)
    write_r1_plots(run_dir)
    return results


def load_policy(path: str | Path, task: AdditionTask) -> Transformer:
    """A policy saved by ``save_policy`` (or any checkpoint of a model with the task's vocabulary)."""
    model = load_pretrained(path, progress=False).train()
    needed = task_model_config("tiny", task)
    if model.config.vocab_size != needed.vocab_size or model.config.max_seq_len < needed.max_seq_len:
        raise R1Error(f"{path}: a policy for this task needs vocab_size={needed.vocab_size} and max_seq_len >= "
                         f"{needed.max_seq_len}, the checkpoint has {model.config.vocab_size} and "
                         f"{model.config.max_seq_len}")
    return model


def save_policy(model: Transformer, path: Path) -> None:
    """The model as an official-format checkpoint (``load_pretrained`` reads it), written atomically.

    The official config.json keeps every ModelArgs field, ``max_batch_size`` included, which the batched
    evaluation needs (the hub form has no such field).
    """
    save_pretrained(model, path, format="official", progress=False, overwrite=True)  # replaces a previous copy
