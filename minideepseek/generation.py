"""Text generation: prefill, cached decoding, sampling, and MTP speculative decoding.

``generate(model, input_ids, max_new_tokens)`` runs the prompt through the model once
(*prefill*), filling the KV cache of every layer (``kv_cache.py``), then produces one
token per sequence per step (*decode*), each step a forward pass of one token that
reads the cache.

Prompts of different lengths are right-padded and batched: each row keeps its own
position, so row b's first token is at position 0 whatever the other rows hold, and
its pads sit after its last real token where the causal mask hides them from it until
they are overwritten. A row stops at ``eos_id`` or after ``max_new_tokens``.

**MTP speculative decoding** (DeepSeek-V3 report section 5.4.3). The MTP module was
trained to predict the token after next from the main model's hidden state h_i and
the embedding of token i+1. At inference it can *draft* that token for free, and the
main model *verifies* it in the same forward pass that produces the next token:

    step:   feed [t_n, d] at positions n, n+1       t_n: the token just chosen; d: the MTP draft for n+1
            the logits at n       give the main model's own choice y for n+1
            the logits at n+1     give the choice for n+2 *if* d was right
    accept: d == y  (greedy)    -> two tokens for one forward pass: d, then the choice at n+1
            otherwise            -> one token, y; the cache slot n+1 holds a wrong entry that
                                    the next step overwrites

With greedy decoding the output is exactly plain greedy decoding. With sampling, the
draft is accepted with probability min(1, p(d)/q(d)) and a rejection resamples from
max(0, p - q) (Leviathan et al., 2023; Chen et al., 2023), which leaves the output
distribution that of the main model. V3 reports 85-90% acceptance of the second token
and 1.8x the tokens per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .kv_cache import CACHE_KINDS, KVCache, forward_step, mtp_step
from .validation import UserError, is_integer, is_number

Callback = Callable[[int, list[int]], None]


class GenerationError(UserError):
    """A generation setting that cannot work, or a model whose output is not a distribution."""


@dataclass
class GenerationStats:
    """What one ``generate`` call did. Pass one in as ``stats=`` to read it afterwards.

    ``forward_passes`` counts main-model passes (the prefill included); ``drafted`` and
    ``accepted`` count speculative drafts of rows still generating.
    """

    new_tokens: int = 0
    forward_passes: int = 0
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


# --8<-- [start:sampling]
@dataclass
class Sampler:
    """Turns logits into tokens: greedy when ``temperature`` is 0, else top-k / top-p sampling."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution sampled from. logits: (..., vocab) -> float32 probabilities (..., vocab)"""
        raw = logits.float()
        logits = raw / self.temperature
        if not torch.isfinite(logits).all():  # a tiny temperature overflowed to inf, whose softmax is NaN:
            # shift the best logit to 0 first, so that the others go to -inf (probability 0) instead
            logits = (raw - raw.amax(dim=-1, keepdim=True)) / self.temperature
        if self.top_k is not None:
            kth_best = logits.topk(min(self.top_k, logits.size(-1)), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth_best, float("-inf"))
        if self.top_p is not None:
            # Keep the most likely tokens until their mass reaches top_p (the first one always).
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            sorted_probs = sorted_logits.softmax(dim=-1)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p  # mass before it already enough
            logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
        return logits.softmax(dim=-1)

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """One token per row. probs: (batch, vocab) -> (batch,)"""
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (batch, vocab) -> tokens (batch,)"""
        require_finite(logits)  # the argmax of NaN is token 0: a broken model would "answer" silently
        return logits.argmax(dim=-1) if self.greedy else self.draw(self.probs(logits))
# --8<-- [end:sampling]

    # --8<-- [start:verify]
    def verify(self, draft: torch.Tensor, draft_logits: torch.Tensor, logits: torch.Tensor,
               next_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Accept or reject each row's draft, and choose the token after the accepted ones.

        draft: (batch,) the MTP module's token for position n+1, drawn from draft_logits (batch, vocab);
        logits: (batch, vocab) the main model at n (its own view of n+1);
        next_logits: (batch, vocab) the main model at n+1, valid only where the draft is accepted.
        -> accepted: (batch,) bool; bonus: (batch,) the main model's token after the accepted ones.
        """
        require_finite(logits)
        if self.greedy:
            choice = logits.argmax(dim=-1)
            accepted = draft == choice
            return accepted, torch.where(accepted, next_logits.argmax(dim=-1), choice)
        p, q = self.probs(logits), self.probs(draft_logits)
        rows = torch.arange(draft.numel(), device=draft.device)
        ratio = p[rows, draft] / q[rows, draft]
        uniform = torch.rand(ratio.shape, generator=self.generator, device=ratio.device)
        accepted = uniform < ratio  # probability min(1, p(d)/q(d))
        leftover = (p - q).clamp(min=0)
        leftover = torch.where(leftover.sum(-1, keepdim=True) > 0, leftover, p)  # p == q: nothing to correct
        corrected = self.draw(leftover / leftover.sum(-1, keepdim=True))
        return accepted, torch.where(accepted, self.draw(self.probs(next_logits)), corrected)
    # --8<-- [end:verify]


def require_finite(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise GenerationError("the model's logits hold NaN or inf: its weights are not finite "
                              "(a training run that diverged?)")


class Outputs:
    """The new tokens of every row, cut at ``eos_id`` and at ``max_new_tokens``, streamed to ``callback``."""

    def __init__(self, batch: int, max_new_tokens: int, eos_id: int | None, callback: Callback | None):
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.finished = torch.zeros(batch, dtype=torch.bool)
        self.max_new_tokens, self.eos_id, self.callback = max_new_tokens, eos_id, callback

    def add(self, row: int, tokens: list[int]) -> int:
        """Append to one row; returns how many tokens were kept."""
        if self.finished[row]:
            return 0
        tokens = tokens[:self.max_new_tokens - len(self.tokens[row])]
        if self.eos_id in tokens:
            tokens = tokens[:tokens.index(self.eos_id) + 1]
            self.finished[row] = True
        self.tokens[row] += tokens
        if len(self.tokens[row]) == self.max_new_tokens:
            self.finished[row] = True
        if self.callback and tokens:
            self.callback(row, tokens)
        return len(tokens)

    @property
    def done(self) -> bool:
        return bool(self.finished.all())


def main_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(..., dim) hidden states before the final norm -> (..., vocab) next-token logits."""
    return model.head(model.norm(hidden))


def mtp_head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(..., dim) output of the first MTP module -> (..., vocab) logits of the token after next."""
    return model.head(model.mtp[0].norm(hidden))


# --8<-- [start:decode]
def decode(model: nn.Module, cache: KVCache, prompts: torch.Tensor, lengths: torch.Tensor,
           sampler: Sampler, outputs: Outputs, stats: GenerationStats) -> None:
    """Plain decoding. prompts: (batch, longest) right-padded; lengths: (batch,) on the CPU."""
    rows = torch.arange(prompts.size(0), device=prompts.device)
    hidden = forward_step(model, cache, prompts, torch.zeros_like(lengths))  # prefill
    token = sampler.sample(main_logits(model, hidden[rows, lengths.to(prompts.device) - 1]))
    position = lengths.clone()  # where `token` goes
    stats.forward_passes += 1
    while True:
        for row, new in enumerate(token.tolist()):
            stats.new_tokens += outputs.add(row, [new])
        if outputs.done:
            return
        hidden = forward_step(model, cache, token.unsqueeze(1), position)
        token = sampler.sample(main_logits(model, hidden[:, 0]))
        position += (~outputs.finished).long()  # finished rows stay put: their output is ignored
        stats.forward_passes += 1
# --8<-- [end:decode]


# --8<-- [start:speculative]
def decode_speculative(model: nn.Module, cache: KVCache, prompts: torch.Tensor, lengths: torch.Tensor,
                       sampler: Sampler, outputs: Outputs, stats: GenerationStats) -> None:
    """Decoding with one MTP draft per step, verified by the main model. Arguments as in ``decode``."""
    device, batch = prompts.device, prompts.size(0)
    rows, last = torch.arange(batch, device=device), lengths.to(device) - 1
    start = torch.zeros_like(lengths)
    hidden = forward_step(model, cache, prompts, start)  # prefill
    h_last = hidden[rows, last]  # h_{n-1}, the state the next draft starts from
    token = sampler.sample(main_logits(model, h_last))  # t_n
    position = lengths.clone()  # n: where `token` goes
    stats.forward_passes += 1
    for row, new in enumerate(token.tolist()):
        stats.new_tokens += outputs.add(row, [new])
    # The MTP module over the prompt: position i combines h_i with token i+1 (t_n after the last).
    following = torch.cat([prompts[:, 1:], prompts[:, :1]], dim=1).scatter(1, last.unsqueeze(1), token.unsqueeze(1))
    draft_logits = mtp_head_logits(model, mtp_step(model, cache, hidden, following, start))[rows, last]
    while not outputs.done:
        draft = sampler.sample(draft_logits)  # d: the guess for position n+1
        verified = forward_step(model, cache, torch.stack([token, draft], dim=1), position)  # positions n, n+1
        logits = main_logits(model, verified)
        accepted, bonus = sampler.verify(draft, draft_logits, logits[:, 0], logits[:, 1])
        stats.forward_passes += 1
        generating = ~outputs.finished
        stats.drafted += int(generating.sum())
        stats.accepted += int((accepted.cpu() & generating).sum())
        for row, (ok, d, b) in enumerate(zip(accepted.tolist(), draft.tolist(), bonus.tolist())):
            stats.new_tokens += outputs.add(row, [d, b] if ok else [b])
        # Bring the MTP cache up to the new last position n' - 1 (n' = n + 2 if accepted, else n + 1):
        # it needs positions n'-2 and n'-1, each combining h_i with token i+1.
        keep = accepted.view(-1, 1, 1)
        mtp_hidden = torch.where(keep, verified, torch.stack([h_last, verified[:, 0]], dim=1))
        mtp_tokens = torch.where(keep[:, 0], torch.stack([draft, bonus], 1), torch.stack([token, bonus], 1))
        accepted = accepted.cpu().long()
        h = mtp_step(model, cache, mtp_hidden, mtp_tokens, position - 1 + accepted)
        draft_logits = mtp_head_logits(model, h[:, -1])
        h_last, token = mtp_hidden[:, -1], bonus
        position += (1 + accepted) * (~outputs.finished).long()  # finished rows stay put: output ignored
# --8<-- [end:speculative]


def _prompts(input_ids) -> tuple[list[list[int]], str]:
    """The prompts as lists of ints, and the form to give the result back in."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() not in (1, 2) or input_ids.dtype.is_floating_point:
            raise GenerationError(f"input_ids must be (seq,) or (batch, seq) integer token ids, got a "
                             f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}")
        return (input_ids.tolist(), "tensor") if input_ids.dim() == 2 else ([input_ids.tolist()], "tensor1d")
    if isinstance(input_ids, Sequence) and input_ids and all(isinstance(t, int) for t in input_ids):
        return [list(input_ids)], "list1d"
    if isinstance(input_ids, Sequence) and all(isinstance(p, Sequence) for p in input_ids):
        return [list(p) for p in input_ids], "list"
    raise GenerationError("input_ids must be a list of token ids, a list of such lists, or a tensor of ids")


def check_sampling(temperature: float, top_k: int | None = None, top_p: float | None = None,
                   max_new_tokens: int = 0, cache: str = "absorbed", seed: int | None = None) -> None:
    """Raise a one-line GenerationError for a setting of ``generate`` that cannot work, whatever the model."""
    if seed is not None and not (is_integer(seed) and -2**63 <= seed < 2**64):  # what torch.Generator takes
        raise GenerationError(f"seed must be an integer between -2**63 and 2**64 - 1, got {seed!r}")
    if not is_integer(max_new_tokens) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not is_number(temperature) or temperature < 0:  # NaN and inf too
        raise GenerationError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and (not is_integer(top_k) or top_k < 1):
        raise GenerationError(f"top_k must be a positive integer or None, got {top_k}")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise GenerationError(f"top_p must be in (0, 1] or None, got {top_p}")
    if cache not in CACHE_KINDS:
        raise GenerationError(f"cache must be one of {CACHE_KINDS}, got {cache!r}")


def check_request(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                  top_k: int | None, top_p: float | None, cache: str, speculative: bool,
                  seed: int | None = None) -> None:
    """``check_sampling``, then what depends on the model: the prompts' tokens and lengths, the batch, MTP."""
    check_sampling(temperature, top_k, top_p, max_new_tokens, cache, seed)
    config = model.config
    if config.attention != "mla":
        raise GenerationError(f"ModelConfig.attention={config.attention!r}: cached decoding is built for MLA; the "
                              "standard-attention baselines of the ablation chapter only train and evaluate")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerationError("every prompt needs at least one token")
    bad = [t for p in prompts for t in p if not 0 <= t < config.vocab_size]
    if bad:
        raise GenerationError(f"token ids {bad[:5]} are outside the vocabulary (vocab_size={config.vocab_size})")
    if len(prompts) > config.max_batch_size:
        raise GenerationError(f"{len(prompts)} prompts exceed ModelConfig.max_batch_size={config.max_batch_size}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > config.max_seq_len:
        raise GenerationError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds "
                              f"ModelConfig.max_seq_len={config.max_seq_len}")
    if speculative and len(model.mtp) == 0:
        raise GenerationError("speculative decoding drafts with the MTP module, but this model has n_mtp_layers=0")


def generate(model: nn.Module, input_ids, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             seed: int | None = None, cache: str = "absorbed", speculative: bool = False,
             callback: Callback | None = None, stats: GenerationStats | None = None):
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns the prompts followed by the new tokens.

    input_ids: a list of ids, a list of prompts (any lengths), or a (seq,) / (batch, seq) tensor.
        The result has the same form; a (batch, seq) tensor result is padded with ``eos_id``
        after rows that stopped early.
    temperature: 0 decodes greedily; otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens and/or the smallest set holding ``top_p``.
    eos_id: a row stops after producing it. seed: a fixed seed gives the same tokens every run.
    cache: "absorbed" (the latent cache, default) or "naive" (per-head keys and values).
    speculative: draft one token per step with the first MTP module and verify it (see module docs).
    callback(row, tokens): called with each row's new tokens as they are produced (streaming).
    stats: a ``GenerationStats`` to fill in (tokens, forward passes, acceptance, seconds).
    """
    prompts, form = _prompts(input_ids)
    check_request(model, prompts, max_new_tokens, temperature, top_k, top_p, cache, speculative, seed)
    stats = stats if stats is not None else GenerationStats()
    if max_new_tokens == 0:
        new_tokens = [[] for _ in prompts]
    else:
        device = model.embed.weight.device
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        sampler = Sampler(temperature, top_k, top_p, generator)
        lengths = torch.tensor([len(p) for p in prompts])
        padded = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            padded[row, :len(prompt)] = torch.tensor(prompt)
        kv = KVCache(model.config, cache, max_batch_size=len(prompts),
                     max_seq_len=int(lengths.max()) + max_new_tokens, dtype=model.embed.weight.dtype,
                     device=device, mtp_layers=1 if speculative else 0)
        outputs = Outputs(len(prompts), max_new_tokens, eos_id, callback)
        was_training = model.training
        model.eval()
        began = time.perf_counter()
        try:
            with torch.inference_mode():
                loop = decode_speculative if speculative else decode
                loop(model, kv, padded.to(device), lengths, sampler, outputs, stats)
        finally:
            model.train(was_training)
        stats.seconds += time.perf_counter() - began
        new_tokens = outputs.tokens
    results = [prompt + new for prompt, new in zip(prompts, new_tokens)]
    if form == "list1d":
        return results[0]
    if form == "list":
        return results
    if form == "tensor1d":
        return torch.tensor(results[0], dtype=input_ids.dtype, device=input_ids.device)
    width = max(len(r) for r in results)
    fill = eos_id if eos_id is not None else 0
    return torch.tensor([r + [fill] * (width - len(r)) for r in results], dtype=input_ids.dtype,
                        device=input_ids.device)
