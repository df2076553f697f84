"""Grades chapter 12 (scaling out): chapters/12_scaling_out/exercise.py or solution.py.

References: the unsplit MLP and embedding (tensor parallelism must not change the result),
per-rank slices written out with explicit index ranges, a naive count of (token, expert)
pairs, hand-written 1F1B schedules and timelines, and the textbook makespan (n + p - 1)(F + B).
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from minideepseek import ModelConfig
from minideepseek.dualpipe import schedule_1f1b
from minideepseek.moe import MLP, Gate


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_tensor_parallel_mlp_sums_to_the_mlp(exercise, world_size):
    """Rank r holds rows [r*inter/W, (r+1)*inter/W) of w1 and w3 (column-parallel) and the same COLUMNS of w2
    (row-parallel); the partial outputs must sum to the whole MLP.
    Reread: The equations"""
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
    """A rank's partial output may depend only on its own slices of w1, w3 and w2.
    Reread: The equations"""
    ex = exercise("12")
    torch.manual_seed(1)
    x, w1, w3, w2 = torch.randn(3, 4), torch.randn(8, 4), torch.randn(8, 4), torch.randn(4, 8)
    _, before = ex.tensor_parallel_mlp(x, w1, w2, w3, 2)
    w1[4:], w3[4:], w2[:, 4:] = 100.0, -100.0, 7.0  # rank 1's slices only
    _, after = ex.tensor_parallel_mlp(x, w1, w2, w3, 2)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


def test_vocab_parallel_embedding(exercise):
    """Rank r owns rows [r*V/W, (r+1)*V/W): it looks up the tokens it owns, writes zeros for the others, and the
    sum over ranks is the plain embedding.
    Reread: The code, next to the math"""
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
    """send[s, d] counts every (token, expert) pair of rank s whose expert lives on rank d = expert // (E / W),
    a rank's sends to itself included.
    Reread: The equations"""
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
    """Stage s runs min(p - 1 - s, n) warm-up forwards, then alternates the next forward (if any) and the next
    backward.
    Reread: The equations"""
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
    """Each stage runs its ops in order; a forward waits for the same micro-batch's forward on the previous
    stage, a backward for the next stage's backward (the last stage for its own forward).
    Reread: The equations"""
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


def brute_force_node_route(scores, bias, node_of_expert, max_nodes, topk, route_scale):
    """One token: the best set of M nodes by summed node scores, then the best set of experts on them."""
    biased = (scores + bias).tolist()
    nodes = sorted(set(node_of_expert.tolist()))
    hosted = {n: [e for e in range(len(biased)) if node_of_expert[e] == n] for n in nodes}
    node_score = {n: sum(sorted((biased[e] for e in hosted[n]), reverse=True)[:topk // max_nodes]) for n in nodes}
    best = max(itertools.combinations(nodes, max_nodes), key=lambda ns: sum(node_score[n] for n in ns))
    allowed = [e for n in best for e in hosted[n]]
    chosen = max(itertools.combinations(allowed, topk), key=lambda es: sum(biased[e] for e in es))
    total = sum(scores[e].item() for e in chosen)
    return {e: scores[e].item() / total * route_scale for e in chosen}


@pytest.mark.parametrize("bias_shift", [0.0, -3.0])  # -3: every biased score is negative
def test_node_limited_route_matches_brute_force(exercise, bias_shift):
    """A node's score is the sum of its K_r / M best BIASED expert scores, over the experts the placement puts on
    it (not necessarily contiguous); the M best nodes are kept, the rest masked with -inf; the weights come from
    the unbiased scores, renormalised and scaled. Every token then reaches at most M nodes.
    Reread: The idea and its motivation"""
    ex = exercise("12")
    generator = torch.Generator().manual_seed(4)
    scores = torch.sigmoid(torch.randn(40, 16, generator=generator) * 2)
    bias = torch.randn(16, generator=generator) * 0.3 + bias_shift
    node_of_expert = torch.randperm(16, generator=generator) % 4  # 4 nodes of 4 experts, scattered
    weights, indices = ex.node_limited_route(scores, bias, node_of_expert, max_nodes=2, topk=4, route_scale=2.5)
    assert weights.shape == (40, 4) and indices.shape == (40, 4) and indices.dtype == torch.int64
    limit_mattered = 0
    for t in range(40):
        expected = brute_force_node_route(scores[t], bias, node_of_expert, 2, 4, 2.5)
        got = dict(zip(indices[t].tolist(), weights[t].tolist()))
        assert got.keys() == expected.keys(), f"token {t}: chose {sorted(got)}, expected {sorted(expected)}"
        assert list(got.values()) == pytest.approx([expected[e] for e in got], rel=1e-5)
        assert len(set(node_of_expert[indices[t]].tolist())) <= 2
        limit_mattered += set(expected) != set((scores[t] + bias).topk(4).indices.tolist())
    assert limit_mattered > 0  # the data exercises the node limit: a plain top-k fails


def test_node_limited_route_is_v3s_group_limited_gate(exercise):
    """With V3's contiguous placement (256 experts on 8 nodes, M = 4, K_r = 8) node-limited routing is the
    package Gate's group-limited routing (top-2 sums), token for token.
    Reread: The idea and its motivation"""
    ex = exercise("12")
    config = ModelConfig.from_preset("v3-671b", dim=32)
    torch.manual_seed(5)
    gate = Gate(config)
    with torch.no_grad():
        gate.weight.normal_(std=0.3)
        gate.bias.normal_(std=0.05)
    expected_weights, expected_indices, scores = gate(torch.randn(32, config.dim))
    weights, indices = ex.node_limited_route(scores, gate.bias.detach(), torch.arange(256) // 32, 4, 8, 2.5)
    for t in range(32):
        got = dict(zip(indices[t].tolist(), weights[t].tolist()))
        want = dict(zip(expected_indices[t].tolist(), expected_weights[t].tolist()))
        assert got == pytest.approx(want, rel=1e-5)


def test_inter_node_sends_one_copy_per_node(exercise):
    """A token crosses the inter-node network once per OTHER node hosting any of its experts (not once per
    expert), and experts on its own node cost nothing.
    Reread: The idea and its motivation"""
    ex = exercise("12")
    node_of_expert = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    indices = torch.tensor([[0, 1, 2, 3],  # token on node 0: node 1 once (two experts), node 0 free
                            [2, 4, 5, 7],  # token on node 1: nodes 2 (once) and 3
                            [6, 7, 0, 4],  # token on node 3: nodes 0 and 2
                            [1, 3, 5, 7]])  # token on node 0: nodes 1, 2, 3
    token_node = torch.tensor([0, 1, 3, 0])
    sends = ex.inter_node_sends(indices, node_of_expert, token_node, 4)
    expected = torch.tensor([[0, 2, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert torch.equal(sends.long(), expected)
    generator = torch.Generator().manual_seed(6)
    node_of_expert = torch.randperm(32, generator=generator) % 8
    indices = torch.stack([torch.randperm(32, generator=generator)[:8] for _ in range(50)])
    token_node = torch.randint(0, 8, (50,), generator=generator)
    naive = torch.zeros(8, 8, dtype=torch.long)
    for t in range(50):
        for node in set(node_of_expert[indices[t]].tolist()) - {int(token_node[t])}:
            naive[token_node[t], node] += 1
    assert torch.equal(ex.inter_node_sends(indices, node_of_expert, token_node, 8).long(), naive)
