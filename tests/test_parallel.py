"""Tensor and expert parallelism (minideepseek/parallel.py) against the single-process model.

The multi-rank checks run once, in two processes spawned on gloo (127.0.0.1, a free port);
each rank computes the single-process reference itself, from the same seed, and writes the
largest differences it found; the tests below read them. Everything is float32 and must agree
within 1e-6 (relative to the value's size where it exceeds 1, see ``scaled_diff``), except the expert-parallel MoE run again under bf16 autocast, which must agree with
the single process under the same autocast within BF16_TOL (relative).
"""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from minideepseek import ModelConfig, Transformer
from minideepseek.parallel import (
    ColumnParallelLinear, ExpertParallelMoE, ParallelEmbedding, ParallelMoE, RowParallelLinear, expert_parallel,
    load_official_shards, shard_state_dict, tensor_parallel,
)

WORLD = 2
TOL = 1e-6
# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 ~ 0.002 of itself. The
# expert-parallel layer rounds the same sums in other groupings (both ranks' rows in one expert GEMM
# instead of two; replicated gradients summed over ranks), so its results differ from the single
# process by a few roundings (relative_diff ~ 0.003 observed); 1e-2 allows that, while a wrong
# expert or a missing routing weight gives an error of order 1.
BF16_TOL = 1e-2
# The tiny preset cut to one dense and one MoE layer, without MTP: every kind of layer, few collectives.
CONFIG = ModelConfig.from_preset("tiny", n_layers=2, n_mtp_layers=0)


# --------------------------------------------------------------------------- spawning helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(worker, *args, timeout: float = 120.0) -> None:
    """Run ``worker(rank, world, port, *args)`` on WORLD spawned processes; raise on failure or timeout."""
    context = mp.start_processes(worker, args=(WORLD, free_port(), *args), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(f"distributed workers did not finish within {timeout} s")


def init_gloo(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))


def seeded_model(config: ModelConfig = CONFIG) -> Transformer:
    torch.manual_seed(0)
    return Transformer(config)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def scaled_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| over max(1, max|b|): an absolute difference for values up to 1, a relative one above.

    A rank-split gradient is summed in another order than the single-process one; in float32 that
    moves a value of size 3 by a few units in the last place (2.4e-7 each), more than 1e-6 absolute.
    """
    return max_diff(a, b) / max(1.0, b.abs().max().item())


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||: the usual measure for low precision, where each element is off by a few roundings."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def record_expert_dtypes(moe: torch.nn.Module) -> set[str]:
    """Make ``moe.run_experts`` note the dtype of every result it returns; the set it fills is returned."""
    seen, run = set(), moe.run_experts

    def recorded(*args, **kwargs):
        out = run(*args, **kwargs)
        seen.add(str(out.dtype))
        return out

    moe.run_experts = recorded
    return seen


def compare_module(ref: torch.nn.Module, par: torch.nn.Module, x: torch.Tensor, expected_grad) -> dict[str, float]:
    """Output, input gradient and every parameter gradient of ``par`` against ``ref`` on the same input.

    expected_grad(name, full_grad) -> the part of the single-process gradient this rank should hold.
    """
    x_ref, x_par = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_par = ref(x_ref), par(x_par)
    probe = torch.randn(out_ref.shape, generator=torch.Generator().manual_seed(2))
    (out_ref * probe).sum().backward()
    (out_par * probe).sum().backward()
    ref_grads = dict(ref.named_parameters())
    diffs = {"output": scaled_diff(out_par, out_ref), "input_grad": scaled_diff(x_par.grad, x_ref.grad)}
    for name, p in par.named_parameters():
        if p.requires_grad:
            diffs[f"grad {name}"] = scaled_diff(p.grad, expected_grad(name, ref_grads[name].grad))
    return diffs


# --------------------------------------------------------------------------- the worker
def sliced(rank: int, world: int, column: set[str], row: set[str]):
    def expected(name: str, grad: torch.Tensor) -> torch.Tensor:
        module = name.rpartition(".")[0].rpartition(".")[2]
        if module in column:
            return grad.chunk(world, dim=0)[rank]
        if module in row:
            return grad.chunk(world, dim=1)[rank]
        return grad
    return expected


def tensor_parallel_checks(rank: int, world: int) -> dict[str, dict[str, float]]:
    ref, tp = seeded_model(), tensor_parallel(seeded_model())
    x = torch.randn(2, 7, CONFIG.dim, generator=torch.Generator().manual_seed(1))
    freqs = ref.freqs_cis(7, torch.device("cpu"))
    results = {}

    mla = sliced(rank, world, column={"wq", "wq_b", "wkv_b"}, row={"wo"})
    results["mla"] = compare_module(_Wrap(ref.layers[0].attn, freqs), _Wrap(tp.layers[0].attn, freqs), x, mla)

    mlp = sliced(rank, world, column={"w1", "w3"}, row={"w2"})
    results["mlp"] = compare_module(ref.layers[0].ffn, tp.layers[0].ffn, x, mlp)

    per_rank = CONFIG.n_routed_experts // world
    mine = range(rank * per_rank, (rank + 1) * per_rank)

    def moe_grad(name: str, grad: torch.Tensor) -> torch.Tensor:
        return mlp(name, grad) if name.startswith("shared_experts") else grad

    ref.train(), tp.train()
    results["moe"] = compare_module(ref.layers[1].ffn, tp.layers[1].ffn, x, moe_grad)
    results["moe"]["own_experts_only"] = float(sorted(int(n.split(".")[1]) for n, _ in
                                                      tp.layers[1].ffn.named_parameters() if n.startswith("experts."))
                                               != sorted(e for e in mine for _ in range(3)))
    results["moe"]["tokens_per_expert"] = max_diff(tp.layers[1].ffn.tokens_per_expert.float(),
                                                   ref.layers[1].ffn.tokens_per_expert.float())

    # The whole model: logits, and the vocabulary-split embedding's gradient.
    ref.zero_grad(), tp.zero_grad()
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))
    logits_ref, logits_tp = ref(tokens), tp(tokens)
    for logits in (logits_ref, logits_tp):
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
    results["model"] = {
        "logits": max_diff(logits_tp, logits_ref),
        "grad embed.weight": max_diff(tp.embed.weight.grad, ref.embed.weight.grad.chunk(world)[rank]),
        "grad head.weight": max_diff(tp.head.weight.grad, ref.head.weight.grad.chunk(world)[rank]),
        "grad layers.1.attn.wq_a.weight": max_diff(tp.layers[1].attn.wq_a.weight.grad,
                                                   ref.layers[1].attn.wq_a.weight.grad),
    }
    return results


class _Wrap(torch.nn.Module):
    """An MLA called with fixed freqs_cis, so compare_module can treat it like an MLP."""

    def __init__(self, attn: torch.nn.Module, freqs: torch.Tensor):
        super().__init__()
        self.attn, self.freqs = attn, freqs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, self.freqs)

    def named_parameters(self, *args, **kwargs):
        return self.attn.named_parameters(*args, **kwargs)


def expert_parallel_checks(rank: int, world: int, experts_impl: str, bf16: bool = False) -> dict:
    """Uneven token counts per rank (5 and 11); the reference runs both ranks' tokens through one MoE.

    With ``bf16`` both forwards run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and the
    differences are relative (``relative_diff``); ``autocast_effect`` is how far the bf16 reference
    is from the float32 one (autocast really changed the arithmetic), and ``expert_dtypes`` the
    dtypes the routed experts' outputs came in, expert parallel then single process (autocast's
    bf16 in both, also for ``torch._grouped_mm``, which autocast does not cast by itself).
    """
    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    diff = relative_diff if bf16 else max_diff
    torch.manual_seed(0)
    ref = seeded_model().layers[1].ffn.train()
    ref.experts_impl = experts_impl
    ep = ExpertParallelMoE(CONFIG).train()
    ep.load_state_dict(shard_state_dict(ref.state_dict(), CONFIG.n_routed_experts, rank, world, split_dense=False))
    ep.experts_impl = experts_impl
    dtypes = record_expert_dtypes(ep), record_expert_dtypes(ref)
    inputs = [torch.randn(1, n, CONFIG.dim, generator=torch.Generator().manual_seed(10 + r)).requires_grad_()
              for r, n in enumerate([5, 11][:world])]
    probes = [torch.randn(x.shape, generator=torch.Generator().manual_seed(20 + r)) for r, x in enumerate(inputs)]
    with autocast():
        ref_out = [ref(x) for x in inputs]
    sum((out * g).sum() for out, g in zip(ref_out, probes)).backward()

    x = inputs[rank].detach().clone().requires_grad_()
    with autocast():
        out = ep(x)
    (out * probes[rank]).sum().backward()
    diffs = {"output": diff(out, ref_out[rank]), "input_grad": diff(x.grad, inputs[rank].grad)}
    ref_params = dict(ref.named_parameters())
    for name, p in ep.named_parameters():
        if not p.requires_grad:
            continue
        grad = p.grad
        if not name.startswith("experts."):  # replicated: each rank holds the gradient of its own tokens
            grad = grad.clone()
            dist.all_reduce(grad)
        diffs[f"grad {name}"] = diff(grad, ref_params[name].grad)
    counts = ep.tokens_per_expert.clone()
    dist.all_reduce(counts)
    diffs["tokens_per_expert"] = max_diff(counts.float(), ref.tokens_per_expert.float())
    if bf16:
        diffs["expert_dtypes"] = [sorted(seen) for seen in dtypes]
        with torch.no_grad():
            ref.eval()  # no second count in tokens_per_expert
            diffs["autocast_effect"] = relative_diff(ref(inputs[rank]), ref_out[rank])
    return diffs


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Every multi-rank check of this file and of test_distributed_train.py, in one pair of processes
    (starting a process that imports torch costs seconds on a busy 2-core machine)."""
    from tests.test_distributed_train import checks as training_checks

    init_gloo(rank, world, port)
    try:
        results = {"tensor_parallel": tensor_parallel_checks(rank, world),
                   "expert_parallel": expert_parallel_checks(rank, world, "loop"),
                   "expert_parallel_grouped": expert_parallel_checks(rank, world, "grouped"),
                   "expert_parallel_bf16": expert_parallel_checks(rank, world, "loop", bf16=True),
                   "expert_parallel_grouped_bf16": expert_parallel_checks(rank, world, "grouped", bf16=True),
                   "training": training_checks()}
        model = load_official_shards(Path(out_dir) / "official")
        tokens = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            save_file({"logits": model(tokens)}, str(Path(out_dir) / f"official_logits{rank}.safetensors"))
        results["official_types"] = [type(model.embed).__name__, type(model.layers[1].ffn).__name__]
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- tests

_RESULTS: list = []  # the one run of the workers, shared with test_distributed_train.py


@pytest.fixture(scope="session")
def distributed_results(tmp_path_factory):
    """Runs the two ranks once per session; test_distributed_train.py reads the same results."""
    from minideepseek.checkpoint import save_pretrained

    if _RESULTS:
        return _RESULTS[0]
    out = tmp_path_factory.mktemp("parallel")
    official = seeded_model().eval()
    save_pretrained(official, out / "official", format="official", world_size=WORLD, progress=False)
    run_workers(worker, str(out))
    _RESULTS.append((out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]))
    return _RESULTS[0]


def assert_all_close(diffs: dict[str, float], where: str) -> None:
    bad = {name: d for name, d in diffs.items() if not d <= TOL}
    assert not bad, f"{where}: differences above {TOL}: {bad}"


@pytest.mark.parametrize("part", ["mla", "mlp", "moe", "model"])
def test_tensor_parallel_matches_single_process(distributed_results, part):
    _, results = distributed_results
    for rank, result in enumerate(results):
        diffs = result["tensor_parallel"][part]
        assert "input_grad" in diffs or part == "model"
        assert_all_close(diffs, f"rank {rank} {part}")


@pytest.mark.parametrize("impl", ["expert_parallel", "expert_parallel_grouped"])
def test_expert_parallel_moe_matches_single_process_with_uneven_tokens(distributed_results, impl):
    _, results = distributed_results
    for rank, result in enumerate(results):
        diffs = result[impl]
        assert any(name.startswith("grad experts.") for name in diffs)
        assert_all_close(diffs, f"rank {rank} {impl}")


@pytest.mark.parametrize("impl", ["expert_parallel_bf16", "expert_parallel_grouped_bf16"])
def test_expert_parallel_moe_matches_single_process_under_bf16_autocast(distributed_results, impl):
    """The same check under CPU bf16 autocast: ``grouped_mm`` is not autocast-aware, so the
    expert-parallel layer must cast as ``MoE.run_experts`` does (it runs that very code)."""
    _, results = distributed_results
    for rank, result in enumerate(results):
        diffs = dict(result[impl])
        effect = diffs.pop("autocast_effect")
        assert effect > 1e-4, f"rank {rank} {impl}: autocast changed nothing ({effect}); the check would be vacuous"
        assert diffs.pop("expert_dtypes") == [["torch.bfloat16"], ["torch.bfloat16"]]
        assert diffs.pop("tokens_per_expert") == 0  # same tokens, same router: the same choices
        assert any(name.startswith("grad experts.") for name in diffs)
        bad = {name: d for name, d in diffs.items() if not d <= BF16_TOL}
        assert not bad, f"rank {rank} {impl}: relative differences above {BF16_TOL}: {bad}"


def test_official_layout_load_at_world_size_two_gives_the_single_process_logits(distributed_results):
    from minideepseek.checkpoint import load_pretrained

    out, results = distributed_results
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        merged = load_pretrained(out / "official", progress=False)(tokens)  # world size 1: every file merged
        original = seeded_model().eval()(tokens)
    for rank, result in enumerate(results):
        assert result["official_types"] == ["ParallelEmbedding", "ParallelMoE"]
        logits = load_file(str(out / f"official_logits{rank}.safetensors"))["logits"]
        assert max_diff(logits, merged) <= TOL
        assert max_diff(logits, original) <= TOL


def test_world_size_one_is_todays_model():
    """Without torch.distributed every parallel layer is the plain one: bit-identical logits and gradients."""
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(5))
    ref = seeded_model()
    ref(tokens).square().mean().backward()
    for cut in (tensor_parallel, expert_parallel):
        model = cut(seeded_model())
        logits = model(tokens)
        logits.square().mean().backward()
        assert torch.equal(logits, ref(tokens))
        ref_params = dict(ref.named_parameters())
        for name, p in model.named_parameters():
            expected = ref_params[name].grad
            assert (p.grad is None and expected is None) or torch.equal(p.grad, expected), name
    tp = tensor_parallel(seeded_model())
    assert isinstance(tp.embed, ParallelEmbedding) and isinstance(tp.layers[1].ffn, ParallelMoE)
    assert isinstance(tp.layers[0].attn.wq_b, ColumnParallelLinear) and isinstance(tp.layers[0].attn.wo, RowParallelLinear)


def test_shard_state_dict_follows_convert_py():
    """Hand-written expectations from inference/convert.py: experts dealt out whole, dims 0/1 split, rest kept."""
    full = {
        "embed.weight": torch.arange(8 * 3.0).view(8, 3),
        "layers.0.attn.wq_a.weight": torch.ones(4, 3),
        "layers.0.attn.wo.weight": torch.arange(3 * 4.0).view(3, 4),
        "layers.1.ffn.gate.bias": torch.zeros(4),
        "layers.1.ffn.experts.0.w1.weight": torch.zeros(2, 3),
        "layers.1.ffn.experts.3.w2.weight": torch.zeros(3, 2),
        "layers.1.ffn.shared_experts.w1.weight": torch.arange(6 * 3.0).view(6, 3),
    }
    rank1 = shard_state_dict(full, n_routed_experts=4, rank=1, world_size=2)
    assert sorted(rank1) == sorted(set(full) - {"layers.1.ffn.experts.0.w1.weight"})
    assert torch.equal(rank1["embed.weight"], full["embed.weight"][4:])
    assert torch.equal(rank1["layers.0.attn.wo.weight"], full["layers.0.attn.wo.weight"][:, 2:])
    assert torch.equal(rank1["layers.1.ffn.shared_experts.w1.weight"], full["layers.1.ffn.shared_experts.w1.weight"][3:])
    assert rank1["layers.0.attn.wq_a.weight"].shape == (4, 3) and rank1["layers.1.ffn.gate.bias"].shape == (4,)
    assert rank1["layers.1.ffn.experts.3.w2.weight"].shape == (3, 2)
    ep_only = shard_state_dict(full, n_routed_experts=4, rank=0, world_size=2, split_dense=False)
    assert ep_only["embed.weight"].shape == (8, 3) and "layers.1.ffn.experts.3.w2.weight" not in ep_only
    with pytest.raises(ValueError, match="n_routed_experts"):
        shard_state_dict(full, n_routed_experts=4, rank=0, world_size=3)


def test_load_official_shards_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model0-mp1.safetensors"):
        load_official_shards(tmp_path, CONFIG)
