"""Grades chapter 12 (scaling out): chapters/12_scaling_out/exercise.py or solution.py.

References: the unsplit MLP and embedding (tensor parallelism must not change the result),
per-rank slices written out with explicit index ranges, a naive count of (token, expert)
pairs, hand-written 1F1B schedules and timelines, and the textbook makespan (n + p - 1)(F + B).
"""

import pytest
import torch
import torch.nn.functional as F

from minideepseek.dualpipe import schedule_1f1b
from minideepseek.moe import MLP


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_tensor_parallel_mlp_sums_to_the_mlp(exercise, world_size):
    ex = exercise("12")
    torch.manual_seed(0)
    mlp = MLP(8, 16)
    x = torch.randn(5, 8)
    w1, w2, w3 = (w.weight.detach() for w in (mlp.w1, mlp.w2, mlp.w3))
    total, partials = ex.tensor_parallel_mlp(x, w1, w2, w3, world_size)
    torch.testing.assert_close(total, mlp(x).detach(), rtol=0, atol=1e-6)
    assert len(partials) == world_size
    part = 16 // world_size
    for rank, partial in enumerate(partials):
        rows = torch.arange(rank * part, (rank + 1) * part)
        expected = (F.silu(x @ w1[rows].T) * (x @ w3[rows].T)) @ w2[:, rows].T
        torch.testing.assert_close(partial, expected, rtol=0, atol=1e-6)


def test_a_rank_uses_only_its_own_slices(exercise):
    ex = exercise("12")
    torch.manual_seed(1)
    x, w1, w3, w2 = torch.randn(3, 4), torch.randn(8, 4), torch.randn(8, 4), torch.randn(4, 8)
    _, before = ex.tensor_parallel_mlp(x, w1, w2, w3, 2)
    w1[4:], w3[4:], w2[:, 4:] = 100.0, -100.0, 7.0  # rank 1's slices only
    _, after = ex.tensor_parallel_mlp(x, w1, w2, w3, 2)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


def test_vocab_parallel_embedding(exercise):
    ex = exercise("12")
    torch.manual_seed(2)
    weight = torch.randn(12, 3)
    tokens = torch.tensor([[0, 3, 4, 11], [7, 8, 2, 5]])
    total, partials = ex.vocab_parallel_embedding(tokens, weight, 3)
    torch.testing.assert_close(total, F.embedding(tokens, weight), rtol=0, atol=0)
    for rank, partial in enumerate(partials):
        for b in range(2):
            for s in range(4):
                token = tokens[b, s].item()
                expected = weight[token] if 4 * rank <= token < 4 * rank + 4 else torch.zeros(3)
                torch.testing.assert_close(partial[b, s], expected, rtol=0, atol=0)


def test_all_to_all_splits_count_every_pair(exercise):
    ex = exercise("12")
    generator = torch.Generator().manual_seed(3)
    indices = [torch.stack([torch.randperm(16, generator=generator)[:4] for _ in range(n)]) if n
               else torch.zeros(0, 4, dtype=torch.long) for n in (5, 9, 0, 2)]  # rank 2 has no tokens
    send = ex.all_to_all_splits(indices, n_experts=16, world_size=4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for source, chosen in enumerate(indices):
        for expert in chosen.flatten().tolist():
            expected[source, expert // 4] += 1
    assert torch.equal(send.long(), expected)
    assert send.sum(1).tolist() == [20, 36, 0, 8]  # k = 4 rows per token


def test_one_f_one_b_by_hand(exercise):
    ex = exercise("12")
    assert ex.one_f_one_b(2, 3) == [
        [("F", 0), ("F", 1), ("B", 0), ("F", 2), ("B", 1), ("B", 2)],
        [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2)],
    ]
    schedule = ex.one_f_one_b(4, 8)
    for stage, ops in enumerate(schedule):
        assert sorted(ops) == sorted([("F", m) for m in range(8)] + [("B", m) for m in range(8)])
        assert ops[:4 - stage] == [("F", m) for m in range(4 - stage)] and ops[4 - stage] == ("B", 0)


def test_pipeline_makespan(exercise):
    ex = exercise("12")
    # Two stages, F=1, B=2: stage 1 runs F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7]; stage 0's B1 ends at 9.
    two = [[("F", 0), ("F", 1), ("B", 0), ("B", 1)], [("F", 0), ("B", 0), ("F", 1), ("B", 1)]]
    assert ex.pipeline_makespan(two, 1.0, 2.0) == 9.0
    for pp, n in [(3, 5), (4, 8), (8, 20)]:
        schedule = [[("F" if op.kind == "F" else "B", op.tasks[0].micro_batch) for op in ops]
                    for ops in schedule_1f1b(pp, n)]
        assert ex.pipeline_makespan(schedule, 1.5, 2.5) == pytest.approx((n + pp - 1) * 4.0)
    # A forward-only schedule: the last micro-batch leaves stage p-1 after (n + p - 1) F.
    forward_only = [[("F", m) for m in range(6)] for _ in range(3)]
    assert ex.pipeline_makespan(forward_only, 1.0, 2.0) == 8.0
