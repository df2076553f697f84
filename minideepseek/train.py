"""Pre-training: the loop that turns a corpus into a DeepSeek-V3 model, and the run folder it fills.

One optimizer step (``train_step``):

    for each of grad_accum micro-batches:
        loss = L_main + lambda/D * sum_k L_MTP^k + L_Bal       (losses.compute_loss; report eq. 25, 17)
        (loss / grad_accum).backward()
    clip the gradient's global norm to 1.0
    AdamW with the warm-up + cosine learning rate            (beta 0.9/0.95, weight decay 0.1 on matrices)
    b_i += gamma * sign(mean load - load_i)                   (balancing.update_expert_biases; eq. 16)

(the last three lines are ``optim.optimizer_step``, which every other training loop shares).

Around it, ``train_model`` evaluates a fixed validation set, logs ``metrics.jsonl``, draws
the loss and expert-load plots, writes checkpoints that resume to the same loss
trajectory, and samples some text at the end. The run folder (``runs/NAME``) holds:

    config.json            the ModelConfig (official form + training fields)
    train_config.json      this run's TrainConfig
    tokenizer.json         the byte-level BPE tokenizer
    train.npy, val.npy     the token streams (so --resume does not tokenize again), data.json
    checkpoint-NNNNNNNN/   model.safetensors, optimizer.safetensors, rng.safetensors, state.json
    metrics.jsonl          one JSON object per logged step
    loss.png, expert_load.png, samples.txt

Nothing is ever unpickled: weights, optimizer moments and RNG states are safetensors, the
rest is JSON. Every file is written beside its destination and moved into place with
``os.replace`` (``runfolder.atomic_path``), so a run killed at any moment leaves either the old
file or the new one. A run holds ``.lock`` in its folder (a second run there is refused), keeps
its last ``keep_checkpoints`` checkpoints, stops at the first NaN or inf loss or gradient with the
last good checkpoint intact, and on Ctrl-C finishes its step and saves one before it exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from tqdm import tqdm

from . import distributed
from .config import PRESETS, ModelConfig
from .data import (CORPUS_FILES, ENDOFTEXT, PackedBatches, TokenizedCorpus, load_corpus, load_tokenizer,
                   prepare_corpus, token_byte_lengths, validation_batches)
from .device import DEVICES, autocast, deterministic_kernels, resolve_device
from .generation import generate
from .losses import compute_loss, cross_entropy
from .model import Transformer
from .optim import NonFiniteError, build_optimizer, learning_rate, optimizer_step
from .run_plots import write_training_plots
from .runfolder import (append_jsonl, atomic_path, check_destination, lock_folder, read_json, read_jsonl,
                        remove_folder, remove_temporaries, rewrite_jsonl, write_json)
from .speed import ATTENTION_BACKENDS, EXPERTS_IMPLS, configure_speed
from .validation import Fields, UserError, is_integer, is_number


class TrainError(UserError):
    """A run that cannot start or continue. The message names the field, folder or file."""


# ----------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Every knob of a run. ``TrainConfig.for_preset("mini")`` sizes the defaults for that model.

    The defaults train ``tiny`` on the Python standard library in about ten minutes on two CPU cores.

    The learning-rate schedule (warm-up, then a cosine from ``lr`` to ``min_lr``) is fixed when the
    run starts: it spans ``schedule_steps`` optimizer steps (default: ``steps``), and after them the
    rate stays at ``min_lr``. Resuming (``from_run``) may change only ``RESUMABLE_CHANGES``, the
    fields that leave the trajectory of the steps already planned alone; ``steps`` among them, so
    ``--resume --steps N`` continues the same schedule up to step N (past ``schedule_steps``, at
    ``min_lr``). To plan a longer cosine, start the run with a larger ``schedule_steps``.
    """

    # the model
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields to change
    # the data
    data_dir: str | None = None  # None: the Python standard library's source
    tokenizer: str | None = None  # a tokenizer.json to use instead of training one
    vocab_size: int | None = None  # of the trained tokenizer; None: the preset's vocab_size
    val_fraction: float = 0.05
    # where and how
    out_dir: str = "runs/tiny"
    device: str = "auto"  # "auto" (cuda > mps > cpu: the first this machine has), "cpu", "cuda", "cuda:N" or "mps"
    compile: bool = False  # torch.compile each Transformer block
    attention: str = "sdpa"  # MLA backend, see speed.configure_speed
    experts: str = "auto"  # routed-experts path, see speed.configure_speed ("auto": the fastest here)
    seed: int = 0
    # optimisation
    steps: int = 1500
    batch_size: int = 16  # sequences per micro-batch
    seq_len: int = 128
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int | None = None  # None: min(100, schedule_steps // 10)
    schedule_steps: int | None = None  # length of warm-up + cosine; None: steps (fixed when the run starts)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # None: no clipping
    # evaluation and bookkeeping
    eval_interval: int = 100
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 250
    keep_checkpoints: int = 2  # the newest ones; older checkpoints are deleted
    sample_prompt: str | None = None  # None: "def " on the default corpus, "" (a new document) on --data
    sample_tokens: int = 200
    progress: bool = True
    # under torchrun (distributed.py): "ddp" or "fsdp" (FSDP2), and expert parallelism on top
    data_parallel: str = "ddp"
    expert_parallel: bool = False

    # Fields that leave the planned trajectory alone, so a resumed run may change them. (device,
    # compile and the parallelism change the arithmetic, not the recipe: the curve continues up to
    # rounding, exactly only on the same CPU setup.)
    RESUMABLE_CHANGES = ("steps", "device", "compile", "eval_interval", "log_interval", "checkpoint_interval",
                         "keep_checkpoints", "sample_prompt", "sample_tokens", "progress", "out_dir",
                         "data_parallel", "expert_parallel")

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # as read back from JSON
        self.validate()
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.schedule_steps is None:
            self.schedule_steps = self.steps
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.schedule_steps // 10)
        self.validate()  # the filled-in values, and min_lr <= lr

    def validate(self) -> None:
        """Every field's type and range, before any work: a bad value fails here, not after the tokenizer
        was trained. Also the limits the model sets (its context length, MTP's extra tokens)."""
        check = Fields(self, TrainError)
        check.choice("preset", sorted(PRESETS))
        for name in ("data_dir", "tokenizer", "sample_prompt"):
            check.text(name, optional=True)
        check.text("out_dir")
        check.integer("vocab_size", minimum=257, optional=True)
        check.number("val_fraction", above=0, below=1)
        check.text("device")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", self.device):
            check.fail("device", f"one of {', '.join(map(repr, DEVICES))} or 'cuda:N'", self.device)
        for name in ("compile", "progress", "expert_parallel"):
            check.boolean(name)
        check.choice("attention", ATTENTION_BACKENDS)
        check.choice("experts", EXPERTS_IMPLS)
        check.choice("data_parallel", ("ddp", "fsdp"))
        check.integer("seed", minimum=0, maximum=2**63 - 1)  # numpy takes no negative seed, torch none of 2**64
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_interval", "eval_batches",
                     "log_interval", "checkpoint_interval", "keep_checkpoints"):
            check.integer(name, minimum=1)
        check.integer("schedule_steps", minimum=1, optional=True)
        check.integer("warmup_steps", minimum=0, optional=True)
        check.integer("sample_tokens", minimum=0)
        check.number("lr", above=0)
        check.number("min_lr", minimum=0, maximum=self.lr if is_number(self.lr) else None, optional=True)
        check.number("weight_decay", minimum=0)
        check.number("grad_clip", above=0, optional=True)
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2 and
                all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            check.fail("betas", "two numbers in [0, 1)", self.betas)
        if not isinstance(self.model_overrides, dict):
            check.fail("model_overrides", "a dict of ModelConfig fields", self.model_overrides)
        model = ModelConfig.from_preset(self.preset, **self.model_overrides)  # a bad override: ConfigError
        if self.seq_len > model.max_seq_len:
            raise TrainError(f"TrainConfig.seq_len ({self.seq_len}) exceeds the model's max_seq_len "
                             f"({model.max_seq_len})")
        if self.seq_len <= model.n_mtp_layers:
            raise TrainError(f"TrainConfig.seq_len ({self.seq_len}) must exceed the MTP depth "
                             f"({model.n_mtp_layers}): MTP module k predicts the token k + 1 positions ahead")

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> "TrainConfig":
        """Defaults sized for ``preset`` (see ``TRAINING_DEFAULTS``), then ``overrides``."""
        values = {"preset": preset, "out_dir": f"runs/{preset}", **TRAINING_DEFAULTS.get(preset, {}), **overrides}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_run(cls, run_dir: str | Path, **changes: Any) -> "TrainConfig":
        """The configuration a run folder was started with (its ``train_config.json``), plus ``changes``,
        which may only touch ``RESUMABLE_CHANGES``."""
        path = Path(run_dir) / "train_config.json"
        if not path.is_file():
            raise TrainError(f"{run_dir} holds no run to resume: {path} does not exist")
        values = read_json(path, error=TrainError)
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            unknown = sorted(set(values) - known) if isinstance(values, dict) else values
            raise TrainError(f"{path} is not a TrainConfig: unknown keys {unknown}")
        values.setdefault("schedule_steps", values.get("steps"))  # runs from before schedule_steps existed
        fixed = sorted(name for name, value in changes.items()
                       if name not in cls.RESUMABLE_CHANGES and value != values.get(name))
        if fixed:
            raise TrainError(f"{', '.join(fixed)} cannot change when resuming: they shape the loss trajectory "
                             f"(see {path}); only {', '.join(cls.RESUMABLE_CHANGES)} may")
        try:
            return cls(**{**values, **changes, "out_dir": str(run_dir)})
        except TrainError as error:
            raise TrainError(f"{path}: {error}") from None


# Per-preset training defaults (the dataclass defaults are tiny's).
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {},
    # One GPU: ~100M activated parameters, 8k tokens a step, bf16 autocast.
    "mini": dict(steps=2000, batch_size=16, seq_len=512, lr=1e-3,
                 eval_interval=250, eval_batches=16, checkpoint_interval=500, experts="grouped"),
}


# ----------------------------------------------------------------------------- optimisation
# --8<-- [start:step]
def train_step(model: Transformer, optimizer: torch.optim.Optimizer, batches: Iterator[torch.Tensor],
               config: TrainConfig, device: torch.device, loss_fn=None) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches, the bias update included; returns the losses
    (averaged), the gradient norm and the expert load of the step (``balancing.expert_load_stats``).

    ``loss_fn(batch)``: the loss of this rank's rows (``distributed.parallelize_for_training``); default
    ``compute_loss(model, batch)``. Under torchrun each rank takes its rows of the global batch.
    """
    totals = torch.zeros(4, device=device)  # loss, main, mean MTP, balance
    for _ in range(config.grad_accum):
        batch = distributed.shard_batch(next(batches)).to(device, non_blocking=True)
        with autocast(device):
            out = loss_fn(batch) if loss_fn is not None else compute_loss(model, batch)
        (out.loss / config.grad_accum).backward()
        mtp = torch.stack(out.mtp).mean() if out.mtp else torch.zeros((), device=device)
        totals += torch.stack([out.loss, out.main, mtp, out.balance]).detach().float() / config.grad_accum
    totals = distributed.average(totals)  # over the ranks: every rank checks the same loss
    grad_norm, load = optimizer_step(model, optimizer, config.grad_clip, loss=totals[0])
    loss, main, mtp, balance = totals.tolist()
    return {"loss": loss, "train_loss": main, "mtp_loss": mtp, "balance_loss": balance, "grad_norm": grad_norm.item(),
            **load}
# --8<-- [end:step]


@torch.no_grad()
def evaluate(model: Transformer, batches: list[torch.Tensor], device: torch.device) -> float:
    """Mean next-token cross-entropy of the main model over fixed validation batches (no MTP, no balance loss)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        with autocast(device):
            logits = model(batch[:, :-1])
        total += cross_entropy(logits, batch[:, 1:]).item() * batch.size(0)
        count += batch.size(0)
    model.train()
    return total / count


@torch.no_grad()
def validation_metrics(model: Transformer, batches: list[torch.Tensor], device: torch.device,
                       token_bytes: torch.Tensor) -> dict[str, float]:
    """``val_loss`` (as ``evaluate``) and ``val_bpb``, in one pass over the validation batches.

    val_bpb: bits per UTF-8 byte of the validation text, sum of the targets' losses / (ln 2 x their bytes),
    over the targets that stand for text (``data.token_byte_lengths``; the document separator has none).
    Unlike the loss per token, it does not depend on the tokenizer, so runs with different vocabularies
    compare.
    """
    model.eval()
    total, count, nats, n_bytes = 0.0, 0, 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        with autocast(device):
            logits = model(batch[:, :-1])
        targets = batch[:, 1:]
        total += cross_entropy(logits, targets).item() * batch.size(0)
        count += batch.size(0)
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        lengths = token_bytes.to(device)[targets.flatten()]
        nats += losses[lengths > 0].sum().item()
        n_bytes += int(lengths.sum())
    model.train()
    return {"val_loss": total / count, "val_bpb": nats / (math.log(2) * max(n_bytes, 1))}


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary folders of an interrupted save are ignored)."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


# --8<-- [start:checkpoint]
def save_checkpoint(run_dir: Path, model: Transformer, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    write: bool = True, keep: int = 2) -> Path:
    """Write ``checkpoint-<step>/`` atomically, then delete all but the newest ``keep`` checkpoints.

    Under torchrun every rank calls it (the weights and moments are gathered into what one process
    would hold, so the run resumes on any number of ranks) and only rank 0 writes (``write``).
    Weights that hold NaN or inf are never written: the older checkpoints stay as they are.

    model.safetensors      the weights (gate biases included), under the module names
    optimizer.safetensors  AdamW's moments and step count, as "<parameter name>.<exp_avg|exp_avg_sq|step>"
    rng.safetensors        the torch (and CUDA) random generator states, uint8 tensors
    state.json             step, data position, the optimizer's hyperparameters (lr, betas, ...)
    """
    names = {p: name for name, p in model.named_parameters()}
    weights = _unique(distributed.full_state_dict(model))
    moments = distributed.full_optimizer_state(model, optimizer)
    groups = [{**{k: v for k, v in group.items() if k != "params"}, "params": [names[p] for p in group["params"]]}
              for group in optimizer.param_groups]
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    final = run_dir / f"checkpoint-{state['step']:08d}"
    if not write:
        return final
    bad = [name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"the weights after step {state['step']} hold NaN or inf ({', '.join(bad[:3])}"
                             f"{', ...' if len(bad) > 3 else ''}): not saved")
    with atomic_path(final, directory=True) as tmp:
        for name, tensors in (("model", weights), ("optimizer", moments), ("rng", rng)):
            try:
                save_file(tensors, str(tmp / f"{name}.safetensors"))
            except SafetensorError as error:  # e.g. the disk is full: an I/O error inside the writer
                raise OSError(f"cannot write {final.name}/{name}.safetensors: {error}") from None
        (tmp / "state.json").write_text(json.dumps({**state, "param_groups": groups}, indent=1))
    for old in checkpoints(run_dir)[:-keep]:
        remove_folder(old)  # renamed away first: a kill midway leaves no half-deleted checkpoint
    return final
# --8<-- [end:checkpoint]


def _unique(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One name per tensor (a tied head is the embedding): safetensors refuses shared memory."""
    seen, unique = set(), {}
    for name, tensor in weights.items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            unique[name] = tensor
    return unique


def load_checkpoint(checkpoint: Path, model: Transformer,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into ``model`` (and ``optimizer``, and the RNGs); returns state.json.

    The model may be parallelised over any number of ranks (``distributed.load_full_state``). A missing
    or damaged file is a ``TrainError`` that names it.
    """
    weights = _read_safetensors(checkpoint / "model.safetensors")
    if model.config.tie_word_embeddings:
        weights["head.weight"] = weights["embed.weight"]
    state = read_json(checkpoint / "state.json", error=TrainError)
    needed = ("step", "data_position") if optimizer is not None else ("step",)  # resuming needs the data position
    if not (isinstance(state, dict) and all(is_integer(state.get(k)) and state[k] >= 0 for k in needed)):
        raise TrainError(f"{checkpoint / 'state.json'} lacks a valid {' and '.join(needed)}; {_older(checkpoint)}")
    moments = None
    if optimizer is not None:
        moments = _read_safetensors(checkpoint / "optimizer.safetensors")
        saved = {key.rsplit(".", 1)[0] for key in moments}
        missing = sorted(name for name, p in model.named_parameters() if p.requires_grad and name not in saved)
        if missing:
            raise TrainError(f"{checkpoint}: no optimizer state for the parameters {missing[:5]}")
    try:
        distributed.load_full_state(model, optimizer, weights, moments)
    except (ValueError, RuntimeError) as error:  # names that differ, or shapes (RuntimeError from copy_)
        message = str(error).splitlines()[0]
        raise TrainError(f"{checkpoint / 'model.safetensors'} does not match the model of "
                         f"{checkpoint.parent / 'config.json'}: {message}") from None
    if optimizer is None:
        return state
    rng = _read_safetensors(checkpoint / "rng.safetensors")
    if "torch" not in rng or rng["torch"].dtype != torch.uint8:
        raise TrainError(f"{checkpoint / 'rng.safetensors'} holds no torch generator state; {_older(checkpoint)}")
    torch.set_rng_state(rng["torch"])
    cuda_states = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors; a missing or damaged file is a TrainError naming it."""
    if not path.is_file():
        raise TrainError(f"{path} is missing; {_older(path.parent)}")
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise TrainError(f"{path} is damaged ({error}); {_older(path.parent)}") from None


def _older(checkpoint: Path) -> str:
    """What to do about a damaged checkpoint: the run can go back to an older one, if it kept one."""
    older = [c for c in checkpoints(checkpoint.parent) if c.name < checkpoint.name]
    if older:
        return f"delete {checkpoint} to resume from {older[-1].name}"
    return "no older checkpoint is kept, so the run cannot resume"


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu", strict: bool = False) -> Transformer:
    """The model (in eval mode) of a training run's latest checkpoint. Weights that hold NaN or inf (a
    checkpoint written before such checkpoints were refused) are named in a warning, or with ``strict``
    in a TrainError."""
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or not (run_dir / "config.json").is_file():
        raise TrainError(f"{run_dir} holds no trained model (expected config.json and checkpoint-*/model.safetensors); "
                         f"train one with: minideepseek train --out {run_dir}")
    model = Transformer(ModelConfig.from_json(run_dir / "config.json")).to(device)
    load_checkpoint(checkpoint, model)
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        message = f"{checkpoint}: {len(bad)} tensor(s) hold NaN or inf: {', '.join(bad[:5])}"
        if strict:
            raise TrainError(message)
        warnings.warn(message, stacklevel=2)
    return model.eval()


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, Tokenizer]:
    """The model (in eval mode) and tokenizer of a training run's latest checkpoint."""
    return load_trained_model(run_dir, device), load_tokenizer(Path(run_dir) / "tokenizer.json")


# ----------------------------------------------------------------------------- the run
@dataclass
class TrainSummary:
    """What ``train_model`` returns; everything else is in the run folder."""

    run_dir: Path
    step: int
    val_losses: list[tuple[int, float]]  # (step, validation loss) over the whole run
    seconds: float  # wall time of this call
    samples: list[str]


def build_model(model_config: ModelConfig, config: TrainConfig, device: torch.device) -> Transformer:
    torch.manual_seed(config.seed)
    model = configure_speed(Transformer(model_config), config.attention, config.experts, device=device).to(device)
    if config.compile:
        for block in [*model.layers, *(m.block for m in model.mtp)]:
            block.compile()
    return model


# What a fresh start may find in its folder and reuse or replace: the tokenized corpus (a cache that
# prepare_corpus reuses when the request matches), and the files of a run of ours that never saved a
# checkpoint (recognised by its train_config.json). Anything else is someone else's: --overwrite.
RUN_FILES = ("config.json", "train_config.json", "metrics.jsonl", "loss.png", "expert_load.png", "samples.txt")


def start_or_resume(config: TrainConfig, resume: bool) -> tuple[TokenizedCorpus, ModelConfig, Path | None]:
    """Check the run folder against ``resume``, then produce the corpus and the model config.

    Called with the folder locked: nothing else writes there, so the temporaries that a run killed
    while saving left behind can be deleted.
    """
    run_dir = Path(config.out_dir)
    remove_temporaries(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if resume:
        if checkpoint is None:
            raise TrainError(f"--resume: no checkpoint in {run_dir} (expected {run_dir}/checkpoint-*/); "
                             "start the run without --resume")
        return load_corpus(run_dir), ModelConfig.from_json(run_dir / "config.json"), checkpoint
    vocab_size = config.vocab_size or PRESETS[config.preset].vocab_size
    corpus = prepare_corpus(run_dir, config.data_dir, config.tokenizer, vocab_size, config.val_fraction, config.seed,
                            progress=config.progress)
    overrides = {**config.model_overrides, "vocab_size": corpus.tokenizer.get_vocab_size()}
    model_config = ModelConfig.from_preset(config.preset, **overrides)
    write_json(run_dir / "config.json", model_config.to_dict())
    write_json(run_dir / "train_config.json", config.to_dict())
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return corpus, model_config, None


def train_model(config: TrainConfig, resume: bool = False, stop_after: int | None = None,
                overwrite: bool = False) -> TrainSummary:
    """Train (or, with ``resume``, continue) the run in ``config.out_dir``.

    A new run refuses a folder that holds another run (resume it instead) or files that are not a
    run's, unless ``overwrite`` (then the run writes its files among them). ``stop_after``: return
    after that step without the end-of-run work, exactly as a run killed then would leave its folder
    (the tests and the notebook use it to interrupt a run).
    """
    device = resolve_device(config.device)
    run_dir = Path(config.out_dir)
    if not resume:
        checkpoint = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if checkpoint is not None:
            raise TrainError(f"{run_dir} already holds a run (up to {checkpoint.name}); continue it with --resume "
                             "or start a new one with --out runs/OTHER")
        ours = [*CORPUS_FILES, *(RUN_FILES if (run_dir / "train_config.json").is_file() else ())]
        check_destination(run_dir, ours, overwrite,
                          "train in it anyway (files named like the run's are replaced, the others left alone)")
    ctx = distributed.init_from_env(device)  # None unless started by torchrun
    device = ctx.device if ctx is not None else device
    main = ctx is None or ctx.is_main
    with deterministic_kernels(device), lock_folder(run_dir) if main else contextlib.nullcontext():
        return run_training(config, device, resume, stop_after, ctx)


def run_training(config: TrainConfig, device: torch.device, resume: bool, stop_after: int | None,
                 ctx: distributed.Context | None = None) -> TrainSummary:
    """The body of ``train_model``. Under torchrun (``ctx``) rank 0 alone writes files."""
    started = time.perf_counter()
    run_dir = Path(config.out_dir)
    main = ctx is None or ctx.is_main
    if main:
        corpus, model_config, checkpoint = start_or_resume(config, resume)
    if ctx is not None:
        dist.barrier()  # rank 0 has prepared the run folder
        if not main:
            corpus, model_config = load_corpus(run_dir), ModelConfig.from_json(run_dir / "config.json")
            checkpoint = latest_checkpoint(run_dir)
    model = build_model(model_config, config, device)
    loss_fn = (distributed.parallelize_for_training(model, config.data_parallel, config.expert_parallel)
               if ctx is not None else None)
    optimizer = build_optimizer(model, config, device)
    batches = PackedBatches(corpus.train, config.batch_size, config.seq_len, config.seed)
    val_batches = validation_batches(corpus.val, config.batch_size, config.seq_len, config.eval_batches)
    token_bytes = torch.from_numpy(token_byte_lengths(corpus.tokenizer))
    metrics_path = run_dir / "metrics.jsonl"

    def log(record: dict[str, Any]) -> None:
        if main:
            append_jsonl(metrics_path, record)

    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        step, batches.position = state["step"], state["data_position"]
        if step >= config.steps:
            raise TrainError(f"the run in {run_dir} is already at step {step} of {config.steps}; "
                             "pass a larger --steps to continue it")
        if main:  # a killed run logged steps that its resumption will redo; the new target is recorded
            rewrite_jsonl(metrics_path, [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= step])
            write_json(run_dir / "train_config.json", config.to_dict())
    else:
        step = 0
        log({"step": 0, "tokens": 0, **validation_metrics(model, val_batches, device, token_bytes)})

    def save() -> None:
        save_checkpoint(run_dir, model, optimizer, {"step": step, "data_position": batches.position,
                                                    "tokens": step * tokens_per_step},
                        write=main, keep=config.keep_checkpoints)
        if main:
            write_training_plots(run_dir)

    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="step", disable=not (config.progress and main),
               mininterval=1.0)
    window_tokens, window_seconds = 0, 0.0
    model.train()
    with _finish_step_on_interrupt(enabled=ctx is None) as interrupted:
        while step < config.steps:
            tick = time.perf_counter()
            lr = learning_rate(step, config.lr, config.min_lr, config.warmup_steps, config.schedule_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                metrics = train_step(model, optimizer, batches, config, device, loss_fn)
            except NonFiniteError as error:
                last = latest_checkpoint(run_dir)
                kept = f"the last good checkpoint, {last.name}, is kept" if last else "no checkpoint was saved yet"
                raise TrainError(f"training stopped: {error}; {kept}") from None
            step += 1
            window_tokens += tokens_per_step
            window_seconds += time.perf_counter() - tick
            bar.update(1)

            evaluate_now = step % config.eval_interval == 0 or step == config.steps
            if step % config.log_interval == 0 or evaluate_now:
                record = {"step": step, "tokens": step * tokens_per_step, "epoch": round(batches.epoch, 4),
                          "lr": lr, **metrics, "tokens_per_s": window_tokens / window_seconds}
                if evaluate_now:
                    record.update(validation_metrics(model, val_batches, device, token_bytes))
                log(record)
                window_tokens, window_seconds = 0, 0.0
                bar.set_postfix({"loss": f"{metrics['train_loss']:.3f}", "tok/s": f"{record['tokens_per_s']:.0f}",
                                 **({"val": f"{record['val_loss']:.3f}", "bpb": f"{record['val_bpb']:.3f}"}
                                    if evaluate_now else {})})
            if step % config.checkpoint_interval == 0 or step == config.steps or interrupted:
                try:
                    save()
                except NonFiniteError as error:
                    raise TrainError(f"training stopped: {error}") from None
            if interrupted:  # Ctrl-C: the step is done and saved; now stop (cli.train says how to resume)
                bar.close()
                raise KeyboardInterrupt
            if stop_after is not None and step >= stop_after:
                break
    bar.close()

    samples = []
    if step == config.steps:  # every rank samples (the same text): the model may be split across them
        samples = write_samples(model, corpus.tokenizer, config, write=main)
    val_losses = [(r["step"], r["val_loss"]) for r in read_jsonl(metrics_path) if "val_loss" in r]
    return TrainSummary(run_dir, step, val_losses, time.perf_counter() - started, samples)


@contextlib.contextmanager
def _finish_step_on_interrupt(enabled: bool = True) -> Iterator[list[bool]]:
    """While active, a first Ctrl-C (SIGINT) only sets a flag, which the loop reads after each step to
    save a checkpoint before it stops; a second Ctrl-C interrupts at once. Stopping in the middle of
    a step could leave the weights half updated, so the step is finished first.

    Yields the flag: a list that is empty until Ctrl-C is pressed. Only in the main thread of a
    single process (under torchrun every rank would have to agree on when to stop).
    """
    flag: list[bool] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum, frame) -> None:
        if flag:
            raise KeyboardInterrupt
        flag.append(True)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def write_samples(model: Transformer, tokenizer: Tokenizer, config: TrainConfig, count: int = 3,
                  write: bool = True) -> list[str]:
    """``count`` samples from the trained model into samples.txt: top-k 40, temperature 0.8, the prompt
    placed at the start of a new document (after ``<|endoftext|>``), each stopped at the next one."""
    prompt = config.sample_prompt if config.sample_prompt is not None else ("def " if config.data_dir is None else "")
    eot = tokenizer.token_to_id(ENDOFTEXT)
    prompt_ids = [eot] + tokenizer.encode(prompt, add_special_tokens=False).ids
    new_tokens = min(config.sample_tokens, model.config.max_seq_len - len(prompt_ids))
    samples = [tokenizer.decode(generate(model, prompt_ids, new_tokens, temperature=0.8, top_k=40, eos_id=eot,
                                         seed=config.seed + i)[1:], skip_special_tokens=True)
               for i in range(count)]
    header = f"prompt {prompt!r} at the start of a document, top-k 40, temperature 0.8, {config.sample_tokens} tokens"
    text = header + "\n" + "".join(f"\n----- sample {i + 1} -----\n{s}\n" for i, s in enumerate(samples))
    if not write:
        return samples
    with atomic_path(Path(config.out_dir) / "samples.txt") as tmp:
        tmp.write_text(text)
    return samples
