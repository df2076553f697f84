"""A verifiable reasoning task for the R1 chapter: column addition with worked solutions.

DeepSeek-R1-Zero learned to reason from **rule-based rewards**: an answer checked by a
program, never by a neural judge. This module is such a task, small enough for a
tiny model on a laptop CPU:

    prompt       47+55=
    completion   <think>7+5=12 4+5=9 +1=10</think><answer>102</answer><eos>

The ``<think>`` part adds the columns least-significant first; when the previous column
reached 10, a step of its own adds the carry to the column's sum ("+1=10"). The
``<answer>`` part holds the sum. The
tags are R1-Zero's template ("<think> reasoning process here </think> <answer> answer
here </answer>"); the prompt itself is content-free, as in R1-Zero, so the model has to
produce the tags on its own.

The data comes from a **buggy teacher**: on a column that should receive a carry it
leaves out the carry step with probability ``carry_bug`` (0.7), and then writes the answer its
own (wrong) working implies. A model trained to imitate the teacher can do no better
than the teacher on carry problems, but it still *samples* the correct working some of
the time, and the answer checker tells right from wrong. That gap is what reinforcement
learning closes in ``grpo.py`` (chapter 11).

Contents: the tokenizer (18 tokens), the problem generator with a held-out split and
difficulty knobs (digits, bug rate), the teacher, the strict checker, and the rewards as
plain functions ``(prompt, completion) -> float``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

import torch

from .validation import Fields, UserError

# ----------------------------------------------------------------------------- tokenizer
EOS = "<eos>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
VOCAB: tuple[str, ...] = (EOS, *"0123456789", "+", "=", " ", *TAGS)
TOKEN_ID = {token: index for index, token in enumerate(VOCAB)}
EOS_ID = TOKEN_ID[EOS]  # also the padding token: a padded position is masked out everywhere
_TOKEN_PATTERN = re.compile("|".join(re.escape(t) for t in sorted(VOCAB, key=len, reverse=True)))


class TaskError(UserError):
    """Bad input to the task: text outside the vocabulary, impossible settings. The message names it."""


def encode(text: str) -> list[int]:
    """Text -> token ids. Every character must belong to a token of ``VOCAB``."""
    ids, position = [], 0
    for match in _TOKEN_PATTERN.finditer(text):
        if match.start() != position:
            raise TaskError(f"cannot tokenize {text[position:match.start()]!r} in {text!r}: "
                            f"the vocabulary is {list(VOCAB)}")
        ids.append(TOKEN_ID[match.group()])
        position = match.end()
    if position != len(text):
        raise TaskError(f"cannot tokenize {text[position:]!r} in {text!r}: the vocabulary is {list(VOCAB)}")
    return ids


def decode(ids: list[int] | torch.Tensor) -> str:
    """Token ids -> text, stopping before the first ``<eos>`` (which ends a completion)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    if EOS_ID in ids:
        ids = ids[:ids.index(EOS_ID)]
    return "".join(VOCAB[i] for i in ids)


# ----------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class AdditionTask:
    """The task family. Difficulty knobs: ``n_digits`` per operand and the teacher's ``carry_bug``.

    ``n_heldout`` problems (a fixed, seeded draw) are kept for evaluation and never given to
    SFT or RL. Every operand is written with ``n_digits`` digits (leading zeros), so every
    prompt has the same length, 2 * n_digits + 2 tokens, which keeps batched sampling simple.
    """

    n_digits: int = 2
    carry_bug: float = 0.7
    n_heldout: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        check = Fields(self, TaskError)
        check.integer("n_digits", minimum=1, maximum=3)  # the split enumerates all 10^(2 n_digits) problems
        check.number("carry_bug", minimum=0, maximum=1)  # a probability
        check.integer("seed", minimum=0)
        check.integer("n_heldout")
        if not 0 < self.n_heldout < self.n_problems:
            raise TaskError(f"AdditionTask.n_heldout must be between 1 and {self.n_problems - 1} "
                            f"(there are {self.n_problems} problems with {self.n_digits} digits), got {self.n_heldout}")

    @property
    def n_problems(self) -> int:
        return 10 ** (2 * self.n_digits)

    @property
    def prompt_len(self) -> int:
        return 2 * self.n_digits + 2

    @property
    def max_completion_len(self) -> int:
        """Tokens of the longest worked solution (every column with a two-digit sum and a carry), <eos> included."""
        return len(encode(solution(10 ** self.n_digits - 1, 10 ** self.n_digits - 1, forget=()))) + 1

    def split(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(train, heldout): every (a, b) pair once, shuffled with ``seed``; the held-out ones come first."""
        order = torch.randperm(self.n_problems, generator=torch.Generator().manual_seed(self.seed)).tolist()
        pairs = [divmod(index, 10 ** self.n_digits) for index in order]
        return pairs[self.n_heldout:], pairs[:self.n_heldout]

    def prompt(self, a: int, b: int) -> str:
        return f"{a:0{self.n_digits}d}+{b:0{self.n_digits}d}="

    def teacher(self, a: int, b: int, rng: random.Random) -> str:
        """The buggy teacher's completion: each carry is forgotten with probability ``carry_bug``."""
        carries = carry_columns(a, b, self.n_digits)
        return solution(a, b, forget={c for c in carries if rng.random() < self.carry_bug}, n_digits=self.n_digits)


def carry_columns(a: int, b: int, n_digits: int = 2) -> list[int]:
    """The columns (0 = units) that receive a carry from the column before them, done correctly."""
    columns, carry = [], 0
    for column in range(n_digits):
        if carry:
            columns.append(column)
        carry = (a // 10 ** column % 10 + b // 10 ** column % 10 + carry) // 10
    return columns


def solution(a: int, b: int, forget: set[int] | tuple[int, ...] = (), n_digits: int = 2) -> str:
    """A worked solution, ``<think>`` column by column, then the ``<answer>`` that working implies.

    Each column adds its two digits; a column that receives a carry then adds it to that sum in a
    step of its own ("+1=10"). ``forget``: columns whose carry step the teacher leaves out (its bug);
    with ``forget=()`` the solution is correct.
    solution(47, 55) == "<think>7+5=12 4+5=9 +1=10</think><answer>102</answer>"
    """
    steps, digits, carry = [], [], 0
    for column in range(n_digits):
        x, y = a // 10 ** column % 10, b // 10 ** column % 10
        total = x + y
        steps.append(f"{x}+{y}={total}")
        if carry and column not in forget:
            steps.append(f"+1={total + 1}")
            total += 1
        digits.append(total % 10)
        carry = total // 10
    answer = str(int(str(carry) + "".join(str(d) for d in reversed(digits))))
    return f"<think>{' '.join(steps)}</think><answer>{answer}</answer>"


# ----------------------------------------------------------------------------- checker and rewards
# --8<-- [start:checker]
_PROMPT = re.compile(r"(\d+)\+(\d+)=")
_FORMAT = re.compile(r"<think>([^<]*)</think><answer>([^<]*)</answer>")


def target(prompt: str) -> str:
    """The exact answer a prompt asks for: "47+55=" -> "102" (no leading zeros)."""
    match = _PROMPT.fullmatch(prompt)
    if match is None:
        raise TaskError(f"not an addition prompt: {prompt!r} (expected digits+digits=)")
    return str(int(match.group(1)) + int(match.group(2)))


def extract_answer(completion: str) -> str | None:
    """The content of the ``<answer>`` block of a well-formed completion, else None.

    Well-formed means exactly ``<think>...</think><answer>...</answer>`` and nothing else:
    one block of each, in that order, no text outside them (the strict R1-Zero template).
    """
    match = _FORMAT.fullmatch(completion)
    return match.group(2) if match else None


def accuracy_reward(prompt: str, completion: str) -> float:
    """1.0 if the completion is well-formed and its answer is exactly the sum, else 0.0.

    Exact string match: "0102", "102 " or an empty answer are wrong (no partial credit to hack).
    """
    return float(extract_answer(completion) == target(prompt))


def format_reward(prompt: str, completion: str) -> float:
    """1.0 if the completion follows the template and the answer is a number, else 0.0."""
    answer = extract_answer(completion)
    return float(answer is not None and answer.isdigit())
# --8<-- [end:checker]


def overlong_penalty(max_tokens: int, soft_tokens: int) -> Callable[[str, str], float]:
    """DAPO's soft overlong punishment as a reward function: 0 up to ``max_tokens - soft_tokens``
    completion tokens, then falling linearly to -1 at ``max_tokens`` (and -1 beyond)."""
    if not 0 < soft_tokens <= max_tokens:
        raise TaskError(f"overlong_penalty needs 0 < soft_tokens <= max_tokens, got {soft_tokens}, {max_tokens}")

    def length_penalty(prompt: str, completion: str) -> float:
        excess = len(encode(completion)) - (max_tokens - soft_tokens)
        return -min(1.0, max(0.0, excess / soft_tokens))

    return length_penalty


RewardFunction = Callable[[str, str], float]
DEFAULT_REWARDS: dict[str, tuple[RewardFunction, float]] = {
    # name: (function, weight). R1 adds its accuracy and format rewards; format weighs little
    # here because the cold-started model already keeps the format (TinyZero uses 0.1 too).
    "accuracy": (accuracy_reward, 1.0),
    "format": (format_reward, 0.1),
}
