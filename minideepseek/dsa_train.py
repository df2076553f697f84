"""DeepSeek-V3.2's two training stages for the lightning indexer, in miniature on the CPU.

V3.2 was not trained from scratch: it continued from a dense checkpoint (V3.1-Terminus) in two
stages (V3.2 report, section 2.1.1):

1. **Dense warm-up.** The main model is frozen and attends densely, as before. Only the indexer
   trains, to imitate the main attention: for each query t, the target p_{t,:} is the main
   attention summed over all heads and L1-normalised, and the loss is KL(p_{t,:} || softmax(I_{t,:}))
   over every visible key (summed over the layers). 1,000 steps of 2.1B tokens in the report.
2. **Sparse training.** The model now attends to the indexer's top-k keys only and trains on the
   language-modelling loss; the indexer keeps its KL loss, now over the selected keys only. The
   indexer's input is detached, so the two losses train disjoint parameters: the language-modelling
   loss reaches the main model (the top-k is not differentiable), the KL loss reaches the indexer.
   15,000 steps, 944B tokens, k = 2,048 in the report.

``run_dsa_stages`` runs both at ``tiny-dsa`` size on bytes of the Python standard library's source,
after a short dense pretraining that stands in for the dense checkpoint, and measures what the
chapter reports: the share of the dense attention mass that the indexer's top-k captures before and
after the warm-up (against a window of the k most recent tokens), and the validation loss of the
sparse model against a dense model trained on the same batches for as many steps.

    python -m minideepseek.dsa_train --out runs/dsa       # a few minutes on two CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .indexer import Indexer
from .model import Transformer


@dataclass
class DSATrainConfig:
    preset: str = "tiny-dsa"
    seq_len: int = 128  # index_topk = 32 of tiny-dsa: 3 queries in 4 see more keys than they may attend to
    batch_size: int = 8
    dense_steps: int = 400  # the dense "checkpoint" the stages start from
    warmup_steps: int = 150  # stage 1
    sparse_steps: int = 300  # stage 2; the dense control trains as many steps on the same batches
    lr: float = 2e-3
    indexer_lr: float = 2e-3
    eval_batches: int = 8
    max_bytes: int = 3_000_000
    seed: int = 0


# ------------------------------------------------------------------------------------------- data
def byte_corpus(max_bytes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes of standard-library source files (vocab 256): (train, validation) int64, by file, 95/5."""
    from .data import find_documents

    documents = find_documents()
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    chunks, total = [], 0
    for i in order:
        raw = documents[i].text.encode("utf-8")
        chunks.append(raw)
        total += len(raw)
        if total >= max_bytes:
            break
    cut = max(1, len(chunks) // 20)
    as_tensor = lambda parts: torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8).long()  # noqa: E731
    return as_tensor(chunks[cut:]), as_tensor(chunks[:cut])


def sample_batch(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size, seq_len + 1) random windows."""
    starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size,), generator=generator)
    return torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()])


# ------------------------------------------------------------------------------------------- hooks
def indexers(model: Transformer) -> list[Indexer]:
    return [m for m in model.modules() if isinstance(m, Indexer)]


def set_mode(model: Transformer, mode: str) -> None:
    """"dense": every MLA attends to all visible keys (V3); "sparse": to its indexer's top-k (V3.2)."""
    for indexer in indexers(model):
        indexer.mode = mode


def record(model: Transformer, on: bool = True) -> list[dict]:
    """Make every layer keep its index scores, selection and head-averaged attention of the next forward."""
    records = []
    for indexer in indexers(model):
        indexer.record = {} if on else None
        records.append(indexer.record)
    return records


# --8<-- [start:indexer_kl]
def indexer_kl(records: list[dict], sparse: bool) -> torch.Tensor:
    """The indexer's loss, summed over layers, averaged over queries (V3.2 report eq. 3 and 4):
    KL(p_t || softmax(I_t)), with p_t the main attention summed over heads and L1-normalised, over the
    visible keys (warm-up) or over the selected keys only (sparse training)."""
    total = 0.0
    for r in records:
        keys = r["selected"] if sparse else r["causal"].expand_as(r["index"])
        target = r["attention"] * keys  # zero outside the keys (in sparse mode it already is)
        target = target / target.sum(-1, keepdim=True)
        log_q = r["index"].masked_fill(~keys, float("-inf")).log_softmax(dim=-1)
        kl = torch.where(target > 0, target * (target.clamp_min(1e-30).log() - log_q), 0.0).sum(-1)
        total = total + kl.mean()
    return total
# --8<-- [end:indexer_kl]


def lm_loss(model: Transformer, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


@torch.no_grad()
def evaluate(model: Transformer, batches: list[torch.Tensor]) -> float:
    was = model.training
    model.eval()
    loss = sum(lm_loss(model, b).item() for b in batches) / len(batches)
    model.train(was)
    return loss


# --8<-- [start:captured]
@torch.no_grad()
def captured_attention(model: Transformer, batches: list[torch.Tensor]) -> dict[str, float]:
    """The share of the dense attention mass (head-averaged) that falls on the indexer's top-k keys, averaged
    over the queries that see more than k keys and over the layers; and the same share for the k most recent
    keys (a sliding window) and for k keys drawn at random (k / visible keys), for comparison."""
    mode = [ix.mode for ix in indexers(model)]
    set_mode(model, "dense")
    shares = {"indexer top-k": [], "recent window": [], "random k": []}
    for batch in batches:
        records = record(model)
        model(batch[:, :-1])
        for r in records:
            topk = model.config.index_topk
            seq = r["attention"].size(-1)
            visible = r["causal"].sum(-1)  # (seq,)
            rows = visible > topk
            window = r["causal"] & ~torch.ones(seq, seq, dtype=torch.bool).tril(-topk)
            shares["indexer top-k"].append((r["attention"] * r["selected"]).sum(-1)[:, rows].mean())
            shares["recent window"].append((r["attention"] * window).sum(-1)[:, rows].mean())
            shares["random k"].append((topk / visible[rows].float()).mean())
    record(model, on=False)
    for ix, m in zip(indexers(model), mode):
        ix.mode = m
    return {name: float(torch.stack(values).mean()) for name, values in shares.items()}
# --8<-- [end:captured]


# ------------------------------------------------------------------------------------------- stages
def run_dsa_stages(config: DSATrainConfig = DSATrainConfig(), log=print) -> dict:
    """Dense pretraining, the dense warm-up (stage 1), sparse training (stage 2) and a dense control.
    Returns every measurement as a dict (also what ``main`` writes to ``results.json``)."""
    torch.manual_seed(config.seed)
    train, val = byte_corpus(config.max_bytes, config.seed)
    model_config = ModelConfig.from_preset(config.preset, vocab_size=256, n_mtp_layers=0,
                                           max_seq_len=max(config.seq_len, 128))
    model = Transformer(model_config)
    val_batches = [sample_batch(val, config.batch_size, config.seq_len, torch.Generator().manual_seed(1000 + i))
                   for i in range(config.eval_batches)]
    out: dict = {"config": dataclasses.asdict(config), "index_topk": model_config.index_topk,
                 "train_bytes": train.numel(), "val_bytes": val.numel()}
    main_params = [p for n, p in model.named_parameters() if ".indexer." not in n]
    indexer_params = [p for n, p in model.named_parameters() if ".indexer." in n]
    began = time.perf_counter()

    def train_lm(steps: int, mode: str, seed: int, with_kl: bool, label: str) -> None:
        set_mode(model, mode)
        optimizer = torch.optim.AdamW(main_params, lr=config.lr, weight_decay=0.1)
        indexer_opt = torch.optim.AdamW(indexer_params, lr=config.indexer_lr) if with_kl else None
        generator = torch.Generator().manual_seed(seed)
        for step in range(steps):
            batch = sample_batch(train, config.batch_size, config.seq_len, generator)
            records = record(model, on=with_kl)
            loss = lm_loss(model, batch)
            total = loss + (indexer_kl(records, sparse=True) if with_kl else 0.0)
            total.backward()
            torch.nn.utils.clip_grad_norm_(main_params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if indexer_opt:
                indexer_opt.step()
                indexer_opt.zero_grad(set_to_none=True)
            if step % 50 == 0 or step == steps - 1:
                log(f"{label} step {step}: loss {loss.item():.3f} ({time.perf_counter() - began:.0f}s)")
        record(model, on=False)

    # 0. the dense checkpoint (stands in for V3.1-Terminus)
    train_lm(config.dense_steps, "dense", config.seed + 1, with_kl=False, label="dense pretraining")
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    out["val_loss_dense_checkpoint"] = evaluate(model, val_batches)
    set_mode(model, "sparse")
    out["val_loss_sparse_random_indexer"] = evaluate(model, val_batches)
    out["captured_before_warmup"] = captured_attention(model, val_batches)
    log(f"before warm-up: {out['captured_before_warmup']}")

    # 1. dense warm-up: main model frozen, indexer trained to match the dense attention (KL over visible keys)
    set_mode(model, "dense")
    optimizer = torch.optim.AdamW(indexer_params, lr=config.indexer_lr)
    generator = torch.Generator().manual_seed(config.seed + 2)
    warmup_kl = []
    for step in range(config.warmup_steps):
        batch = sample_batch(train, config.batch_size, config.seq_len, generator)
        records = record(model)
        model(batch[:, :-1])
        kl = indexer_kl(records, sparse=False)
        kl.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for p in main_params:  # frozen: any gradient that reached them is discarded
            p.grad = None
        warmup_kl.append(kl.item())
        if step % 50 == 0 or step == config.warmup_steps - 1:
            log(f"warm-up step {step}: KL {kl.item():.3f} ({time.perf_counter() - began:.0f}s)")
    record(model, on=False)
    out["warmup_kl_first_last"] = [warmup_kl[0], warmup_kl[-1]]
    out["captured_after_warmup"] = captured_attention(model, val_batches)
    set_mode(model, "sparse")
    out["val_loss_sparse_after_warmup"] = evaluate(model, val_batches)
    log(f"after warm-up: {out['captured_after_warmup']}, sparse val loss {out['val_loss_sparse_after_warmup']:.4f}")
    warm_state = {k: v.clone() for k, v in model.state_dict().items()}

    # 2. sparse training: LM loss through the top-k attention + the indexer's KL over the selected keys
    train_lm(config.sparse_steps, "sparse", config.seed + 3, with_kl=True, label="sparse training")
    out["val_loss_sparse_final"] = evaluate(model, val_batches)
    out["captured_after_sparse_training"] = captured_attention(model, val_batches)

    # control: the dense checkpoint trained densely on the same batches, as many steps
    model.load_state_dict(dense_state)
    train_lm(config.sparse_steps, "dense", config.seed + 3, with_kl=False, label="dense control")
    out["val_loss_dense_final"] = evaluate(model, val_batches)
    # the warmed-up sparse model evaluated densely, for reference
    model.load_state_dict(warm_state)
    out["seconds"] = time.perf_counter() - began
    log(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-dsa")
    parser.add_argument("--out", default="runs/dsa", help="folder for results.json")
    for field in ("dense_steps", "warmup_steps", "sparse_steps", "seq_len", "batch_size", "seed"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(DSATrainConfig, field))
    args = parser.parse_args(argv)
    config = DSATrainConfig(preset=args.preset, dense_steps=args.dense_steps, warmup_steps=args.warmup_steps,
                            sparse_steps=args.sparse_steps, seq_len=args.seq_len, batch_size=args.batch_size,
                            seed=args.seed)
    results = run_dsa_stages(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
