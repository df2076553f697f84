"""The ``minideepseek`` command line. Each subcommand is one function below.

Errors: ``main`` turns every error a user can cause (``validation.UserError``: a bad flag, config
field or file) and the operating system's (a file missing, unreadable, a full disk) into one line,
``minideepseek CMD: message``, and exit status 1; ``--debug`` shows the traceback instead. A closed
pipe (``minideepseek info | head -1``) and Ctrl-C end the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

from .config import ModelConfig, PRESETS
from .params import count_parameters
from .validation import UserError


def load_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig.from_json(args.config) if args.config is not None else ModelConfig.from_preset(args.preset)


def info(args: argparse.Namespace) -> None:
    """Print the parameter table of a preset or a config.json."""
    config = load_config(args)
    source = args.config if args.config is not None else f"preset {args.preset}"
    print(f"DeepSeek-V3 architecture from {source}\n")
    print(count_parameters(config).table())


def plan(args: argparse.Namespace) -> None:
    """Print the predicted memory (term by term, per layer) and time of a training run or of generation."""
    from .device import resolve_device
    from .plan import plan_generation, plan_training

    config = load_config(args)
    device = resolve_device(args.device).type if args.device == "auto" else args.device
    if args.generate:
        result = plan_generation(config, args.batch_size or 1, args.seq_len or 4096, device=device, cache=args.cache,
                                 fp8=args.fp8, device_memory=args.device_memory)
    else:
        from .train import TRAINING_DEFAULTS, TrainConfig

        defaults = TrainConfig(**{**TRAINING_DEFAULTS.get(args.preset, {})}) if args.config is None else TrainConfig()
        result = plan_training(config, args.batch_size or defaults.batch_size, args.seq_len or defaults.seq_len,
                               device=device, attention=args.attention, fp8=args.fp8,
                               device_memory=args.device_memory, peak_tflops=args.peak_tflops, mfu=args.mfu,
                               steps=args.steps or (defaults.steps if args.config is None else None))
    print(result.table())


def bench(args: argparse.Namespace) -> None:
    """Run ``minideepseek bench WHAT`` (minideepseek/bench/WHAT.py) and print the report its ``run`` returns."""
    import importlib

    # Only when benchmarking: the benchmarks import the whole package (and transformers, the baseline).
    module = importlib.import_module(f"{__package__}.bench.{args.what}")
    shared = {"command", "what", "func", "device", "quick", "debug", "argv"}
    options = {name: value for name, value in vars(args).items() if name not in shared and value is not None}
    try:
        print(module.run(args.device, quick=args.quick, **options))
    except ValueError as error:
        sys.exit(f"minideepseek bench {args.what}: {error}")


def doctor(args: argparse.Namespace) -> None:
    """Print what this machine can run (minideepseek/doctor.py), one OK/FAIL line per check."""
    from .doctor import doctor as run_doctor

    sys.exit(run_doctor(skip_compile=args.skip_compile))


def grade(args: argparse.Namespace) -> None:
    """Grade a chapter's exercise (minideepseek/grade.py): a PASS/FAIL line per test and a score."""
    from .grade import GradeError, grade as run_grade, grade_all

    if args.all == (args.chapter is not None):
        sys.exit("minideepseek grade: give a chapter number (e.g. 03) or --all, not both")
    if args.csv and not args.all:
        sys.exit("minideepseek grade: --csv goes with --all")
    try:
        if args.all:
            sys.exit(grade_all(args.student_dir, args.reference, args.csv))
        sys.exit(run_grade(args.chapter, args.student_dir, args.reference, hint=args.hint))
    except GradeError as error:
        sys.exit(f"minideepseek grade: {error}")


def handout(args: argparse.Namespace) -> None:
    """Write a student folder (minideepseek/handout.py): stubs, lessons, notebooks, no solutions."""
    from .handout import HandoutError, write_handout

    try:
        folders = write_handout(args.dir, args.chapters.split(",") if args.chapters else None)
    except HandoutError as error:
        sys.exit(f"minideepseek handout: {error}")
    print(f"wrote {len(folders)} chapter(s) to {args.dir}: {', '.join(f.name for f in folders)}")
    print(f"grade them with: minideepseek grade NN --student-dir {args.dir}")


def train(args: argparse.Namespace) -> None:
    """Train a model (minideepseek/train.py): progress bar, then the run folder's checkpoint, plots and samples."""
    from .train import TrainConfig, latest_checkpoint, train_model

    out = args.out or f"runs/{args.preset or 'tiny'}"
    flags = {"steps": args.steps, "device": args.device, "compile": args.compile or None, "data_dir": args.data,
             "tokenizer": args.tokenizer, "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
             "min_lr": args.min_lr, "schedule_steps": args.schedule_steps, "seed": args.seed, "preset": args.preset,
             "checkpoint_interval": args.checkpoint_interval, "keep_checkpoints": args.keep_checkpoints,
             "data_parallel": args.data_parallel, "expert_parallel": args.expert_parallel or None}
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        if args.resume:
            config = TrainConfig.from_run(out, **given)
        else:
            config = TrainConfig.for_preset(given.pop("preset", "tiny"), out_dir=out, **given)
        summary = train_model(config, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:  # the run finished its step and saved a checkpoint (train.py) if it had begun
        checkpoint = latest_checkpoint(out)
        sys.exit(f"\ninterrupted; {checkpoint} holds the last step; continue with: minideepseek train --out "
                 f"{out} --resume" if checkpoint else "\ninterrupted before the first checkpoint: nothing to resume")
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun, rank 0 reports
        return
    (first_step, first), (last_step, last) = summary.val_losses[0], summary.val_losses[-1]
    print(f"validation loss {first:.3f} (step {first_step}) -> {last:.3f} (step {last_step}) in "
          f"{summary.seconds / 60:.1f} min; run folder {summary.run_dir}: checkpoint, metrics.jsonl, loss.png, "
          f"expert_load.png, samples.txt")
    print(f"\nsample:\n{summary.samples[0]}")


def ablate(args: argparse.Namespace) -> None:
    """Run an ablation study (minideepseek/ablate.py): its variants at equal FLOPs, then the summary table."""
    import shlex

    from .ablate import Settings, run_study, summary_table

    settings = Settings(study=args.study, seeds=args.seeds, steps=args.steps, flops=args.flops, preset=args.preset,
                        data_dir=args.data, corpus_dir=args.corpus, device=args.device, batch_size=args.batch_size,
                        seq_len=args.seq_len, lr=args.lr, iso=args.iso)
    command = "minideepseek " + " ".join(shlex.quote(a) for a in args.argv)
    out = args.out or f"runs/ablate/{args.study}"
    try:
        results = run_study(settings, out, resume=args.resume, command=command)
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; the finished runs are in {out}/results.json; continue with: {command} --resume")
    print(f"{results['study']}: {results['question']}\n")
    print(summary_table(results))
    print(f"\nresults.json, summary.md and bpb.png in {out}")


def claims(args: argparse.Namespace) -> None:
    """Print the ledger of the papers' claims (minideepseek/claims.py); exit 1 when an entry is inconsistent."""
    from .claims import main as claims_main

    sys.exit(claims_main([*(["--ledger", args.ledger] if args.ledger else []),
                          *(["--record-facts"] if args.record_facts else []),
                          *(["--markdown", args.markdown] if args.markdown else [])]))


def verify(args: argparse.Namespace) -> None:
    """Check a checkpoint's tensor names, shapes and dtypes against its config, reading headers only."""
    from .checkpoint import CheckpointError, verify_checkpoint

    if args.limit < 1:
        raise CheckpointError(f"--limit must be at least 1, got {args.limit}")
    report = verify_checkpoint(args.checkpoint, args.config)
    print(report.summary(limit=args.limit))
    if not report.ok:
        sys.exit(1)


def convert(args: argparse.Namespace) -> None:
    """Rewrite a checkpoint in the hub or the official format (minideepseek/checkpoint.py)."""
    import torch

    from .checkpoint import CheckpointError, convert_checkpoint

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[args.dtype]
    try:
        written = convert_checkpoint(args.source, args.destination, to=args.to, dequantize=args.dequantize,
                                     shard_size=args.shard_size, world_size=args.world_size, dtype=dtype,
                                     config=args.config, overwrite=args.overwrite)
    except (CheckpointError, ValueError) as error:
        sys.exit(f"minideepseek convert: {error}")
    print(f"wrote {len(written)} files to {args.destination}")


def generate_text(args: argparse.Namespace) -> None:
    """``generate`` streams a continuation of --prompt; ``chat`` runs a REPL (minideepseek/chat.py)."""
    from .chat import ChatError, chat, complete, load_text_model, repair_text
    from .device import inference_dtype, resolve_device
    from .generation import check_request, check_sampling

    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                   cache=args.cache, speculative=args.speculative)
    try:
        check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens, args.cache,
                       args.seed)  # before loading the model
        if args.command == "chat" and args.max_new_tokens < 1:
            raise ChatError(f"--max-new-tokens must be at least 1 in a chat, got {args.max_new_tokens}")
        device = resolve_device(args.device)
        text_model = load_text_model(args.run, device, args.tokenizer, inference_dtype(device),
                                     progress=sys.stderr.isatty())  # a progress bar for a person, not a log
        check_request(text_model.model, [[0]], 0, args.temperature, args.top_k, args.top_p, args.cache,
                      args.speculative)  # what needs the model: speculative decoding needs an MTP module
        if args.command == "chat":
            if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 reach chat(), which repairs each line
                sys.stdin.reconfigure(errors="surrogateescape")
            chat(text_model, args.max_new_tokens, **options)
            return
        prompt = repair_text(args.prompt, "--prompt")
        sys.stdout.write(prompt)
        _, stats = complete(text_model, prompt, args.max_new_tokens, **options)
    except ValueError as error:  # the library's own checks (token ids, lengths) are ValueErrors too
        sys.exit(f"minideepseek {args.command}: {error}")
    accepted = f", {stats.acceptance_rate:.0%} of MTP drafts accepted" if args.speculative else ""
    print(f"\n[{stats.new_tokens} tokens in {stats.seconds:.2f} s, {stats.tokens_per_second:.1f} tokens/s, "
          f"{stats.forward_passes} forward passes{accepted}]", file=sys.stderr)


def grpo(args: argparse.Namespace) -> None:
    """DeepSeek-R1's recipe on the built-in task (minideepseek/r1.py): cold-start SFT, GRPO, an SFT-only control."""
    import dataclasses

    from .grpo import GRPOConfig
    from .r1 import R1Config, run_r1

    flags = {"steps": args.steps, "group_size": args.group_size, "lr": args.lr, "beta": args.beta,
             "scale_rewards": args.scale_rewards, "aggregation": args.aggregation}
    run = {"sft_steps": args.sft_steps, "n_digits": args.digits, "carry_bug": args.carry_bug,
           "n_heldout": args.heldout}
    try:
        config = R1Config(out_dir=args.out or "runs/grpo", seed=args.seed, model=args.preset, threads=args.threads,
                          grpo=dataclasses.replace(GRPOConfig(), **{k: v for k, v in flags.items() if v is not None}),
                          control=not args.no_control, distill=not args.no_distill, init=args.init,
                          **{k: v for k, v in run.items() if v is not None})
        results = run_r1(config, overwrite=args.overwrite)
    except ValueError as error:
        sys.exit(f"minideepseek grpo: {error}")
    print(f"held-out greedy accuracy on {results['n_problems']} unseen problems (seed {results['seed']}):")
    start = "cold-start SFT" if config.sft_steps > 0 else "before RL (no SFT)"
    for stage, label in (("sft", start), ("grpo", "after GRPO"), ("control", "SFT-only control"),
                         ("student", "distilled student")):
        if stage in results:
            accuracy, carry = results[stage]["accuracy"], results[stage]["carry_accuracy"]
            print(f"  {label:<18} {accuracy:7.1%}   (problems with a carry: {carry:.1%})")
    if "student_skipped" in results:
        print(f"  distillation skipped: {results['student_skipped']}")
    seconds = results["seconds"]
    print(f"wall time {seconds['total']:.0f} s (SFT {seconds['sft']:.0f} s, GRPO {seconds['grpo']:.0f} s); "
          f"run folder {config.out_dir}: metrics.jsonl, eval.json, training.png, heldout.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minideepseek", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: MINIDEEPSEEK_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("info", help="parameter counts, KV-cache and weight memory of a model")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", default="v3-671b", choices=sorted(PRESETS))
    source.add_argument("--config", help="an official inference JSON or a hub config.json")
    p.set_defaults(func=info)

    p = commands.add_parser("plan", help="will it fit, how long: predicted memory and time of a run (nothing allocated)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    source.add_argument("--config", help="an official inference JSON or a hub config.json")
    p.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's training default)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's training default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="the kind of device planned for (default: this machine's)")
    p.add_argument("--device-memory", help="memory of the device, e.g. 24GB: says whether it fits, the largest batch")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"], help="attention backend (default sdpa)")
    p.add_argument("--fp8", action="store_true", help="FP8 linears (training) or FP8 weights (--generate)")
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of the device (default: 989 on cuda)")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation assumed for the time (default 0.12 on CUDA, 0.4 on a CPU)")
    p.add_argument("--steps", type=int, help="optimizer steps of the run (default: the preset's)")
    p.add_argument("--generate", action="store_true", help="plan inference instead: weights + KV cache")
    p.add_argument("--cache", default="absorbed", choices=["absorbed", "naive"],
                   help="with --generate: latent (absorbed) or per-head (naive) KV cache")
    p.set_defaults(func=plan)

    # `minideepseek bench WHAT`: every benchmark is a module minideepseek/bench/WHAT.py whose
    # run(device, quick=..., **options) returns its report, and one sub-subparser of `benches` here:
    # `--device` and `--quick` come from `shared`; each option's dest is the name of a keyword of that
    # run() and its default None leaves the default to run(). To add one, add such a block.
    p = commands.add_parser("bench", help="benchmarks that print tables (ratios against baselines, one process)")
    benches = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:1, cpu")
    shared.add_argument("--quick", action="store_true", help="smaller sizes, for a short run on a CPU")

    b = benches.add_parser("moe", parents=[shared], help="one MoE layer fwd+bwd: our loop/grouped vs transformers")
    b.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    b.add_argument("--tokens", type=int, help="tokens per forward (default 8192; --quick: 1024)")
    b.add_argument("--repeat", type=int, help="timed repetitions, median reported (default 10; --quick: 3)")
    b.set_defaults(func=bench)

    b = benches.add_parser("train", parents=[shared],
                           help="training steps: tokens/s, MFU, memory, ours vs transformers")
    b.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    b.add_argument("--tokens", type=int, help="tokens per step, batch x seq (default 16384; --quick: 1024)")
    b.add_argument("--seq", type=int, help="sequence length (default 1024; --quick: 128)")
    b.add_argument("--steps", type=int, help="timed training steps per model (default 10; --quick: 2)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also run compiled variants (default: on CUDA only)")
    b.add_argument("--mtp-layers", type=int, help="MTP depth of our model (default 0: transformers has none)")
    b.add_argument("--peak-tflops", type=float, help="peak for MFU (default on CUDA: 989, the H100's dense bf16)")
    b.set_defaults(func=bench)

    b = benches.add_parser("load", parents=[shared],
                           help="load real-width V3 layers from published-format FP8 files: time, memory")
    b.add_argument("--layers", type=int, help="first layers of the 671B model, 3 dense then MoE (default 4)")
    b.add_argument("--shrink", type=int, help="divide every width by this (default 1; e.g. 16 for a CPU; --quick: 32)")
    b.add_argument("--dtype", choices=["bf16", "fp32"], help="dtype of the loaded model (default bf16)")
    b.add_argument("--seq", type=int, help="tokens in the timed forward pass (default 512; --quick: 16)")
    b.add_argument("--dir", dest="directory",
                   help="where to write the temporary checkpoint (default: the system temp dir)")
    b.set_defaults(func=bench)

    b = benches.add_parser("generate", parents=[shared],
                           help="decode speed: absorbed vs per-head cache vs transformers; KV bytes")
    b.add_argument("--preset", default="mini", choices=sorted(PRESETS), help="model of the generation table")
    b.add_argument("--speculative", action="store_true", help="also train tiny briefly and measure MTP speculation")
    b.add_argument("--train-steps", type=int, help="training steps of that tiny model (default 300; --quick: 50)")
    b.set_defaults(func=bench)

    b = benches.add_parser("fp8", parents=[shared],
                           help="FP8: error by granularity, accumulation, FP8-vs-BF16 loss, memory, GEMM TFLOP/s")
    b.add_argument("--steps", type=int, help="training steps of the loss comparison "
                   "(default: 300 for tiny on a CPU, 200 for mini on an FP8 GPU; --quick or MINIDEEPSEEK_QUICK=1: 20)")
    b.set_defaults(func=bench)

    b = benches.add_parser("all", parents=[shared],
                           help="every benchmark above plus plan-vs-measured memory, into one markdown report")
    b.add_argument("--out", help="folder of the report, OUT/report.md (default bench-report)")
    b.set_defaults(func=bench)

    for name, help_text in [("generate", "continue --prompt with a trained or loaded model, streaming"),
                            ("chat", "a small chat REPL with a trained or loaded model")]:
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--run", required=True, help="a run folder (minideepseek train --out) or a checkpoint folder")
        if name == "generate":
            p.add_argument("--prompt", required=True)
        p.add_argument("--max-new-tokens", type=int, default=200)
        p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
        p.add_argument("--top-k", type=int, default=None)
        p.add_argument("--top-p", type=float, default=None)
        p.add_argument("--seed", type=int, default=None, help="fixes the sampled tokens")
        p.add_argument("--cache", choices=["absorbed", "naive"], default="absorbed", help="KV cache of MLA")
        p.add_argument("--speculative", action="store_true", help="draft with the MTP module, verify in one pass")
        p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu, the first available), cuda, mps, cpu")
        p.add_argument("--tokenizer", help="a tokenizer.json (default: the one in --run)")
        p.set_defaults(func=generate_text)

    p = commands.add_parser("doctor", help="Python/torch versions, device, bf16/FP8/torch.compile, extras")
    p.add_argument("--skip-compile", action="store_true", help="skip the torch.compile check (~20 s on a CPU)")
    p.set_defaults(func=doctor)

    p = commands.add_parser("grade", help="grade a chapter's exercise: PASS/FAIL per test and a score")
    p.add_argument("chapter", nargs="?", help="chapter number, e.g. 03 (or its folder name, 03_mla)")
    graded = p.add_mutually_exclusive_group()
    graded.add_argument("--student-dir", help="a student's folder: DIR/NN_slug/exercise.py or DIR/NN_slug.py "
                        "(default: chapters/NN_slug/exercise.py)")
    graded.add_argument("--reference", action="store_true", help="grade the reference solutions instead")
    p.add_argument("--hint", action="store_true", help="for the first failing test: what it checks, what to reread")
    p.add_argument("--all", action="store_true", help="every chapter (with --student-dir: those the folder holds)")
    p.add_argument("--csv", help="with --all: append a row per chapter (student, chapter, passed, total) to this file")
    p.set_defaults(func=grade)

    p = commands.add_parser("handout", help="write a student folder: exercises, lessons, notebooks, no solutions")
    p.add_argument("dir", help="the folder to write (created; existing chapter folders are not overwritten)")
    p.add_argument("--chapters", help="comma-separated chapter numbers, e.g. 01,03 (default: every chapter)")
    p.set_defaults(func=handout)

    p = commands.add_parser("train", help="train a model (default: tiny on the Python standard library, CPU)")
    p.add_argument("--preset", choices=["tiny", "mini"], help="model size (default tiny)")
    p.add_argument("--data", help="a folder of .txt/.md/.py files (default: the Python standard library's source)")
    p.add_argument("--tokenizer", help="a tokenizer.json to use instead of training a byte-level BPE")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="default auto: cuda > mps > cpu, the first available")
    p.add_argument("--steps", type=int, help="optimizer steps (default 1500 for tiny)")
    p.add_argument("--batch-size", type=int, help="sequences per step")
    p.add_argument("--seq-len", type=int, help="tokens per sequence")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine (default: lr / 10)")
    p.add_argument("--schedule-steps", type=int, help="length of warm-up + cosine, fixed when the run starts "
                   "(default: --steps); after it the rate stays at --min-lr")
    p.add_argument("--seed", type=int, help="seed of the initialisation, the split and the batch order")
    p.add_argument("--compile", action="store_true", help="torch.compile each Transformer block (for CUDA; "
                   "on a CPU the compilation takes longer than tiny's whole run)")
    p.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints (default 250 for tiny)")
    p.add_argument("--keep-checkpoints", type=int, help="how many of the newest checkpoints to keep (default 2)")
    p.add_argument("--out", help="run folder (default runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(it may change --steps, --device, --checkpoint-interval, --keep-checkpoints, not the recipe)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a run in a folder that holds other files (those named like the run's are replaced)")
    p.add_argument("--data-parallel", choices=["ddp", "fsdp"],
                   help="under torchrun: DDP (default) or FSDP2 (fully_shard) data parallelism")
    p.add_argument("--expert-parallel", action="store_true",
                   help="under torchrun: each rank owns n_routed_experts / world_size experts (all-to-all)")
    p.set_defaults(func=train)

    p = commands.add_parser("ablate", help="an ablation study: V3's choice vs its alternatives at equal FLOPs, seeded")
    p.add_argument("study", choices=["attention", "moe", "balancing", "gate", "mtp"])
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps of V3's variant; the others get its FLOPs "
                        "(default 200)")
    budget.add_argument("--flops", type=float, help="training FLOPs of every run, e.g. 2e12")
    p.add_argument("--iso", choices=["flops", "tokens"], default="flops",
                   help="what the variants share: training FLOPs (default) or, with --steps, steps and tokens")
    p.add_argument("--preset", choices=["tiny", "mini"], default="tiny", help="the model the variants change")
    p.add_argument("--data", help="a folder of .txt/.md/.py files (default: the Python standard library's source)")
    p.add_argument("--corpus", default="runs/ablate/corpus", help="where the tokenized corpus is cached, shared by "
                   "the studies (default runs/ablate/corpus)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--out", help="study folder (default runs/ablate/STUDY)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study in --out (same options)")
    p.set_defaults(func=ablate)

    p = commands.add_parser("claims", help="the ledger of the papers' claims: what is reproduced here, and how")
    p.add_argument("--ledger", help="a ledger JSON (default: chapters/13_ablations/claims.json)")
    p.add_argument("--record-facts", action="store_true",
                   help="recompute the values the package derives exactly (parameter counts, cache sizes, ...)")
    p.add_argument("--markdown", nargs="?", const="-", metavar="PATH",
                   help="print the site page's Markdown instead of the table (or write it to PATH)")
    p.set_defaults(func=claims)

    p = commands.add_parser("verify", help="check a checkpoint's tensors against its config (headers only, seconds)")
    p.add_argument("checkpoint", help="a directory: config.json + model.safetensors[.index.json] or model{r}-mp{w}")
    p.add_argument("--config", help="a config JSON to check against (default: CHECKPOINT/config.json)")
    p.add_argument("--limit", type=int, default=20, help="names listed per kind of problem")
    p.set_defaults(func=verify)

    p = commands.add_parser("convert", help="rewrite a checkpoint in the hub (hf) or the official format")
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--to", choices=["hf", "official"], required=True)
    p.add_argument("--dequantize", action="store_true", help="write FP8 weights as --dtype (default: keep FP8)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="float dtype (default: the source's)")
    p.add_argument("--shard-size", default="5GB", help="hf: largest shard, e.g. 5GB")
    p.add_argument("--world-size", "--model-parallel", dest="world_size", type=int, default=1,
                   help="official: model-parallel ranks (files), as convert.py's --model-parallel")
    p.add_argument("--config", help="config JSON of the source (default: SOURCE/config.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a destination folder that already holds files (by default it is refused)")
    p.set_defaults(func=convert)

    p = commands.add_parser("grpo", help="R1 in miniature: SFT then GRPO on a verifiable task, vs an SFT-only control")
    p.add_argument("--task", choices=["arithmetic"], default="arithmetic", help="the built-in verifiable task")
    p.add_argument("--preset", choices=["tiny", "student"], default="tiny",
                   help="policy size (minideepseek.r1.MODEL_SIZES)")
    p.add_argument("--steps", type=int, help="GRPO steps (default 60)")
    p.add_argument("--sft-steps", type=int, help="cold-start SFT steps (default 400; 0: R1-Zero, RL without SFT)")
    p.add_argument("--group-size", type=int, help="completions per prompt, G (default 8)")
    p.add_argument("--lr", type=float, help="GRPO learning rate")
    p.add_argument("--beta", type=float, help="KL coefficient (0 drops the reference model)")
    p.add_argument("--scale-rewards", choices=["group", "batch", "none"],
                   help="advantage normalisation (none: Dr. GRPO)")
    p.add_argument("--aggregation", choices=["sequence", "token", "dr_grpo"], help="how token losses are averaged")
    p.add_argument("--digits", type=int, help="digits per operand (default 2)")
    p.add_argument("--carry-bug", type=float, help="how often the SFT teacher skips a carry (default 0.7)")
    p.add_argument("--heldout", type=int,
                   help="held-out problems for the evaluation (default 2000; 20 with --digits 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the initialisation, the batches and the sampling")
    p.add_argument("--no-control", action="store_true", help="skip the SFT-only control run")
    p.add_argument("--no-distill", action="store_true", help="skip distilling the GRPO policy into a smaller student")
    p.add_argument("--init", help="start from this checkpoint folder (e.g. a run's sft_model) instead of from scratch")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: a model this small gains nothing from more, and a run is "
                        "bit-identical for a given count)")
    p.add_argument("--out", help="run folder (default runs/grpo); a previous run there is replaced when this one ends")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out folder that holds files other than a previous run's")
    p.set_defaults(func=grpo)

    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # ablate records the exact command in its results
    debug = args.debug or bool(os.environ.get("MINIDEEPSEEK_DEBUG"))
    try:
        with one_line_warnings(args.command):
            args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler, rather than at exit
    except BrokenPipeError:  # `minideepseek info | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's final flush is quiet
        sys.exit(141)  # 128 + SIGPIPE, what a program killed by the closed pipe reports
    except KeyboardInterrupt:  # Ctrl-C: the user knows; no traceback
        if debug:
            raise
        print(file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT
    except (UserError, OSError) as error:
        if debug:
            raise
        sys.exit(f"minideepseek {args.command}: {describe(error)}")


def describe(error: Exception) -> str:
    """An error as one line: an OSError as "reason: file" (not "[Errno 13] Permission denied: 'file'")."""
    if isinstance(error, OSError) and error.strerror:
        files = [f for f in (error.filename, error.filename2) if f is not None]
        return error.strerror + (": " + " -> ".join(map(str, files)) if files else "")
    return " ".join(str(error).split("\n"))  # a multi-line report (verify's) joined into one line


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Print each warning as one line, ``minideepseek CMD: warning: ...``, not Python's two (file:line + source)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"minideepseek {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


if __name__ == "__main__":
    main()
