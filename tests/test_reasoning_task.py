"""The verifiable task: tokenizer, worked solutions, the buggy teacher, the strict checker, rewards, pass@k.

References: solutions written out by hand, Python's own integer addition, and adversarial
completions (the reward-hacking cases reported against open R1 reproductions).
"""

import itertools
import random

import pytest

from minideepseek.reasoning_task import (EOS_ID, VOCAB, AdditionTask, TaskError, accuracy_reward, carry_columns,
                                         decode, encode, extract_answer, format_reward, overlong_penalty, solution,
                                         target)
from minideepseek.r1 import pass_at_k_estimate


def test_worked_solutions_by_hand():
    assert solution(47, 55) == "<think>7+5=12 4+5=9 +1=10</think><answer>102</answer>"
    assert solution(47, 55, forget={1}) == "<think>7+5=12 4+5=9</think><answer>92</answer>"
    assert solution(31, 22) == "<think>1+2=3 3+2=5</think><answer>53</answer>"
    assert solution(0, 0) == "<think>0+0=0 0+0=0</think><answer>0</answer>"
    assert solution(99, 99) == "<think>9+9=18 9+9=18 +1=19</think><answer>198</answer>"
    assert solution(999, 1, n_digits=3) == "<think>9+1=10 9+0=9 +1=10 9+0=9 +1=10</think><answer>1000</answer>"
    assert solution(999, 1, forget={2}, n_digits=3) == "<think>9+1=10 9+0=9 +1=10 9+0=9</think><answer>900</answer>"


@pytest.mark.parametrize("n_digits", [1, 2, 3])
def test_correct_solutions_answer_the_true_sum(n_digits):
    rng = random.Random(n_digits)
    for _ in range(300):
        a, b = rng.randrange(10 ** n_digits), rng.randrange(10 ** n_digits)
        prompt = AdditionTask(n_digits=n_digits, n_heldout=10).prompt(a, b)
        assert extract_answer(solution(a, b, n_digits=n_digits)) == str(a + b) == target(prompt)
        assert accuracy_reward(prompt, solution(a, b, n_digits=n_digits)) == 1.0


def test_carry_columns():
    assert carry_columns(47, 55) == [1]
    assert carry_columns(41, 55) == []
    assert carry_columns(995, 5, n_digits=3) == [1, 2]


def test_the_teacher_forgets_carries_at_its_bug_rate():
    task = AdditionTask(carry_bug=0.7)
    rng = random.Random(0)
    answers = [extract_answer(task.teacher(47, 55, rng)) for _ in range(4000)]
    assert set(answers) == {"102", "92"}
    assert answers.count("92") / len(answers) == pytest.approx(0.7, abs=0.03)
    assert {task.teacher(41, 55, rng) for _ in range(50)} == {solution(41, 55)}  # no carry, nothing to forget


def test_split_is_seeded_complete_and_disjoint():
    train, heldout = AdditionTask(seed=3).split()
    assert len(heldout) == 2000 and len(train) == 8000
    assert set(train).isdisjoint(heldout) and len(set(train) | set(heldout)) == 10_000
    assert AdditionTask(seed=3).split() == (train, heldout)
    assert AdditionTask(seed=4).split()[1] != heldout


def test_tokenizer_round_trip_and_errors():
    text = "47+55=" + solution(47, 55)
    ids = encode(text)
    assert decode(ids) == text and len(VOCAB) == 18
    assert decode(ids + [EOS_ID] + encode("123")) == text  # decoding stops at <eos>
    with pytest.raises(TaskError, match="cannot tokenize 'x'"):
        encode("47x55=")
    with pytest.raises(TaskError, match="n_digits"):
        AdditionTask(n_digits=7)


@pytest.mark.parametrize("completion, accuracy, formatted", [
    ("<think>7+5=12 4+5=9 +1=10</think><answer>102</answer>", 1.0, 1.0),
    ("<think></think><answer>102</answer>", 1.0, 1.0),  # the reasoning is not graded, only the answer
    ("<think>7+5=12 4+5=9</think><answer>92</answer>", 0.0, 1.0),
    ("<think>7+5=12</think><answer>0102</answer>", 0.0, 1.0),  # exact match: no leading zeros
    ("<think>7+5=12</think><answer></answer>", 0.0, 0.0),  # an empty answer earns nothing
    ("<think>7+5=12</think><answer>102 </answer>", 0.0, 0.0),
    ("<answer>102</answer>", 0.0, 0.0),  # no reasoning block
    ("102", 0.0, 0.0),
    ("<think>7</think><answer>102</answer><answer>102</answer>", 0.0, 0.0),  # repeated blocks
    ("<think>7</think><answer>102</answer>5", 0.0, 0.0),  # text after the answer
    (" <think>7</think><answer>102</answer>", 0.0, 0.0),
    ("<think>7+5=12 4+5=9 +1=10</think><answer>102", 0.0, 0.0),  # truncated before </answer>
])
def test_rewards_on_hand_written_completions(completion, accuracy, formatted):
    assert accuracy_reward("47+55=", completion) == accuracy
    assert format_reward("47+55=", completion) == formatted


def test_target_rejects_a_prompt_that_is_not_an_addition():
    with pytest.raises(TaskError, match="not an addition prompt"):
        target("47*55=")


def test_overlong_penalty_is_dapos_linear_ramp():
    penalty = overlong_penalty(max_tokens=20, soft_tokens=10)
    assert penalty("", "1" * 10) == 0.0
    assert penalty("", "1" * 15) == pytest.approx(-0.5)
    assert penalty("", "1" * 20) == -1.0 and penalty("", "1" * 30) == -1.0


@pytest.mark.parametrize("n, correct", [(4, 0), (4, 1), (5, 2), (6, 6), (8, 3)])
def test_pass_at_k_estimate_equals_counting_every_subset(n, correct):
    """Chen et al.'s closed form against the definition: the share of the k-subsets of the n samples
    that hold at least one right answer."""
    samples = [True] * correct + [False] * (n - correct)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        expected = sum(any(subset) for subset in subsets) / len(subsets)
        assert pass_at_k_estimate(n, correct, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_estimate_rejects_impossible_counts():
    with pytest.raises(ValueError, match="correct <= n"):
        pass_at_k_estimate(4, 5, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k_estimate(4, 2, 5)
