"""Data-parallel training (minideepseek/distributed.py) against one process on the same global batch.

Two gloo ranks each take half of a global batch of 4 sequences; every rank also computes the
single-process reference on all 4. ``checks`` runs inside the two processes that
tests/test_parallel.py spawns (one start-up for both files); the tests read its results. DDP, FSDP2 and DDP with expert parallelism
must give the reference's gradients, loss, bias update, optimizer step and checkpoint within 1e-6
(float32); a single-process checkpoint must resume on two ranks to the reference's next step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from minideepseek import ModelConfig, Transformer
from minideepseek.balancing import update_expert_biases
from minideepseek.distributed import (
    all_reduce_expert_counts, average, clip_grad_norm_, full_optimizer_state, full_state_dict, load_full_state,
    parallelize_for_training, shard_batch,
)
from minideepseek.losses import compute_loss
from tests.test_parallel import TOL, WORLD, distributed_results, max_diff  # noqa: F401 (a fixture)

# One dense layer, one MoE layer and one MTP module: every kind of parameter, few collectives.
CONFIG = ModelConfig.from_preset("tiny", n_layers=2)


def seeded_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(CONFIG)


def global_batch(step: int) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (4, 17), generator=torch.Generator().manual_seed(100 + step))


def adamw(model: Transformer) -> torch.optim.AdamW:
    # eps=1: the first Adam steps are ~lr*sign(g), which would amplify 1e-9 differences of near-zero gradients.
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, eps=1.0, weight_decay=0.1)


def optimizer_state(model: Transformer, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {p: name for name, p in model.named_parameters()}
    return {f"{names[p]}.{slot}": v for p, slots in optimizer.state.items() for slot, v in slots.items()}


def reference(steps: int = 2) -> list[dict]:
    """The single process, step by step: loss, gradients, biases, weights and moments after each step."""
    model = seeded_model()
    optimizer = adamw(model)
    history = []
    for step in range(steps):
        out = compute_loss(model, global_batch(step))
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        norm = torch.nn.utils.get_total_norm(list(grads.values()))
        optimizer.step()
        optimizer.zero_grad()
        update_expert_biases(model)
        history.append({"loss": out.loss.detach(), "grads": grads, "norm": norm,
                        "state": {k: v.clone() for k, v in model.state_dict().items()},
                        "moments": {k: v.clone() for k, v in optimizer_state(model, optimizer).items()}})
    return history


def one_step(wrapped, model, optimizer, step: int) -> dict[str, float]:
    """One distributed optimizer step as the trainer takes it: loss, gradient norm, gradients (before the step)."""
    out = wrapped(shard_batch(global_batch(step)))
    out.loss.backward()
    loss = average(out.loss.detach())
    norm = clip_grad_norm_(model, max_norm=1e9)  # measure only
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    optimizer.zero_grad()
    all_reduce_expert_counts(model)
    update_expert_biases(model)
    return {"loss": loss, "norm": norm, "grads": grads}


def compare(step_result: dict, ref: dict, model, optimizer) -> dict[str, float]:
    # The norm sums ~200 squared norms in another order (DTensor shards): compare it relatively, x10 looser.
    diffs = {"loss": max_diff(step_result["loss"], ref["loss"]),
             "grad_norm (relative / 10)": max_diff(step_result["norm"], ref["norm"]) / ref["norm"].item() / 10}
    for name, grad in step_result["grads"].items():
        grad = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
        diffs[f"grad {name}"] = max_diff(grad, ref["grads"][name])
    state = full_state_dict(model)
    assert sorted(state) == sorted(ref["state"]), "the gathered state dict must name every parameter"
    diffs["weights after the step"] = max(max_diff(state[k], ref["state"][k]) for k in state)
    moments = full_optimizer_state(model, optimizer)
    assert sorted(moments) == sorted(ref["moments"])
    diffs["moments after the step"] = max(max_diff(moments[k], ref["moments"][k]) for k in moments)
    biases = torch.stack([state[k] for k in sorted(state) if k.endswith("gate.bias")])
    gathered = [torch.empty_like(biases) for _ in range(WORLD)]
    dist.all_gather(gathered, biases)
    diffs["bias identical on every rank"] = max(max_diff(g, biases) for g in gathered)
    return diffs


def checks() -> dict[str, dict[str, float]]:
    ref = reference()
    results = {}
    for name, data_parallel, experts in [("ddp", "ddp", False), ("fsdp", "fsdp", False),
                                         ("ddp_expert_parallel", "ddp", True)]:
        model = seeded_model()
        wrapped = parallelize_for_training(model, data_parallel, expert_parallel=experts)
        optimizer = adamw(model)
        results[name] = compare(one_step(wrapped, model, optimizer, 0), ref[0], model, optimizer)

    # Resume a single-process checkpoint (after step 0) on two ranks: experts or FSDP shards from full tensors.
    for name, data_parallel, experts in [("resume_on_two_ranks", "ddp", True), ("resume_on_two_ranks_fsdp", "fsdp", False)]:
        model = seeded_model(seed=1)  # other weights: everything must come from the checkpoint
        wrapped = parallelize_for_training(model, data_parallel, expert_parallel=experts)
        optimizer = adamw(model)
        load_full_state(model, optimizer, ref[0]["state"], ref[0]["moments"])
        results[name] = compare(one_step(wrapped, model, optimizer, 1), ref[1], model, optimizer)
    return results


@pytest.fixture(scope="module")
def results(distributed_results):
    return [result["training"] for result in distributed_results[1]]


@pytest.mark.parametrize("setup", ["ddp", "fsdp", "ddp_expert_parallel", "resume_on_two_ranks",
                                   "resume_on_two_ranks_fsdp"])
def test_matches_single_process_on_the_same_global_batch(results, setup):
    for rank, result in enumerate(results):
        diffs = result[setup]
        assert any(name.startswith("grad layers.1.ffn.experts.") for name in diffs)
        assert any(name.startswith("grad mtp.0.") for name in diffs)
        bad = {name: d for name, d in diffs.items() if not d <= TOL}
        assert not bad, f"rank {rank} {setup}: differences above {TOL}: {bad}"


def test_expert_parallel_ranks_hold_half_the_experts(results):
    """Each rank reported gradients only for its own 8 of the 16 experts of layer 1."""
    for rank, result in enumerate(results):
        experts = {int(name.split(".")[4]) for name in result["ddp_expert_parallel"]
                   if name.startswith("grad layers.1.ffn.experts.")}
        assert experts == set(range(8 * rank, 8 * rank + 8))


def test_shard_batch_refuses_an_uneven_split(monkeypatch):
    from minideepseek import distributed

    assert shard_batch(torch.arange(6).view(6, 1)).shape == (6, 1)  # one process keeps everything
    monkeypatch.setattr(distributed, "group_size", lambda group=None: 4)  # as on 4 ranks
    with pytest.raises(ValueError, match="6 sequences .* does not split evenly over 4 ranks"):
        shard_batch(torch.zeros(6, 3))


def test_torchrun_training_matches_the_single_process_run(tmp_path):
    """``train_model`` under ``torchrun --nproc_per_node=2`` (what ``torchrun ... -m minideepseek train`` runs),
    with expert parallelism, on the CPU: the losses of one process on the same global batches.
    A short run on a small corpus (this chapter's three files) with 2-token samples, to stay fast."""
    import dataclasses
    import json
    import os
    import subprocess
    import sys

    from minideepseek.train import TrainConfig, train_model
    from tests.test_parallel import free_port

    if "expert_parallel" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        pytest.skip("the trainer is not wired to minideepseek.distributed yet")
    settings = dict(device="cpu", steps=3, batch_size=4, seq_len=32, eval_batches=2, sample_tokens=2, progress=False,
                    data_dir=str(Path(__file__).resolve().parents[1] / "chapters" / "12_scaling_out"))
    train_model(TrainConfig.for_preset("tiny", out_dir=str(tmp_path / "one"), **settings))
    script = tmp_path / "two_ranks.py"
    script.write_text("from minideepseek.train import TrainConfig, train_model\n"
                      f"train_model(TrainConfig.for_preset('tiny', out_dir={str(tmp_path / 'two')!r}, "
                      f"expert_parallel=True, **{settings!r}))\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(script)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                for name in ("one", "two"))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 3]
    for a, b in zip(one, two):
        for key in ("loss", "train_loss", "val_loss"):
            if key in a:
                # Gradients summed in another order differ by ~1e-7, and Adam's first steps (about lr * sign(g))
                # amplify that for near-zero gradients: equal losses to ~1e-4, not bits. Exact gradients: above.
                assert b[key] == pytest.approx(a[key], abs=2e-4), (a["step"], key)
