"""The pipeline-schedule simulator (minideepseek/dualpipe.py) against hand timelines and the V3 report's Table 2."""

from __future__ import annotations

from collections import Counter

import pytest

from minideepseek.comm_volume import expected_nodes_per_token, nodes_per_token
from minideepseek.dualpipe import (
    Costs, Op, Task, schedule_1f1b, schedule_dualpipe, schedule_zb1p, simulate, table2, table2_activations,
    table2_bubble,
)

# Backward for input as long as the forward (B = F + W), W <= F, max(F, B) <= F&B <= F + B:
# the cost model of the report's Figure 5, under which its Table 2 is stated.
TABLE2_COSTS = [Costs(1, 2, 1, 2.5), Costs(2, 3, 1, 4), Costs(3, 5, 2, 7), Costs(5, 8, 3, 11), Costs(4, 4, 0, 6)]
SHAPES = [(4, 8), (4, 12), (6, 12), (8, 16), (8, 20)]


def check_timeline(schedule, timeline, pp: int, n: int) -> None:
    """Independent of the simulator: every pass once, no overlap on a rank, every dependency respected."""
    done = {}
    for rank, slots in enumerate(timeline.ranks):
        assert [s.op for s in slots] == schedule[rank]
        for before, after in zip(slots, slots[1:]):
            assert before.end <= after.start
        for slot in slots:
            for task in slot.op.tasks:
                assert task not in done
                expected_stage = rank if task.direction == 0 else pp - 1 - rank
                assert task.stage == expected_stage
                done[task] = slot
    kinds = Counter(task.kind for task in done)
    assert kinds["F"] == kinds["B"] == n * pp  # DualPipe: n/2 per direction, two stages per rank
    assert kinds["W"] == sum(op.kind == "I" for ops in schedule for op in ops)
    for task, slot in done.items():
        if task.kind == "F" and task.stage > 0:
            assert done[Task("F", task.direction, task.micro_batch, task.stage - 1)].end <= slot.start
        if task.kind == "B":
            needed = (Task("F", task.direction, task.micro_batch, task.stage) if task.stage == pp - 1
                      else Task("B", task.direction, task.micro_batch, task.stage + 1))
            assert done[needed].end <= slot.start
        if task.kind == "W":
            assert done[Task("B", task.direction, task.micro_batch, task.stage)].end <= slot.start


def test_1f1b_on_two_stages_by_hand():
    """F=1, B=2, two stages, two micro-batches, worked out on paper."""
    timeline = simulate(schedule_1f1b(2, 2), Costs(F=1, B=2, W=0, FB=3))
    spans = [[(s.op.kind, s.op.tasks[0].micro_batch, s.start, s.end) for s in slots] for slots in timeline.ranks]
    assert spans[0] == [("F", 0, 0, 1), ("F", 1, 1, 2), ("B", 0, 4, 6), ("B", 1, 7, 9)]
    assert spans[1] == [("F", 0, 1, 2), ("B", 0, 2, 4), ("F", 1, 4, 5), ("B", 1, 5, 7)]
    assert timeline.makespan == 9 and timeline.bubble(0) == timeline.bubble(1) == 3


@pytest.mark.parametrize("pp,n", SHAPES)
def test_1f1b_makespan_is_the_textbook_one(pp, n):
    costs = Costs(F=3, B=5, W=2, FB=8)
    schedule = schedule_1f1b(pp, n)
    timeline = simulate(schedule, costs)
    check_timeline(schedule, timeline, pp, n)
    assert timeline.makespan == (n + pp - 1) * (costs.F + costs.B)
    assert [timeline.peak_activations(r) for r in range(pp)] == [min(pp - r, n) for r in range(pp)]


@pytest.mark.parametrize("costs", TABLE2_COSTS)
@pytest.mark.parametrize("pp,n", SHAPES)
def test_table2_bubbles_and_activations_are_reproduced(costs, pp, n):
    for row in table2(pp, n, costs):
        assert row.bubble == pytest.approx(row.bubble_formula), row
        assert row.activations == row.activations_formula, row
    by_method = {row.method: row for row in table2(pp, n, costs)}
    assert by_method["DualPipe"].parameters == 2 and by_method["1F1B"].parameters == 1


def test_table2_formulas_by_hand():
    costs = Costs(F=1, B=2, W=1, FB=2.5)
    assert table2_bubble("1F1B", 8, costs) == 7 * 3
    assert table2_bubble("ZB1P", 8, costs) == 7 * 1
    assert table2_bubble("DualPipe", 8, costs) == 3 * 1.5
    assert [table2_activations(m, 8) for m in ("1F1B", "ZB1P", "DualPipe")] == [8, 8, 9]


@pytest.mark.parametrize("pp,n", [(4, 8), (8, 20)])
def test_zero_bubble_and_dualpipe_timelines_are_valid(pp, n):
    costs = Costs(F=2, B=3, W=1, FB=4)
    for schedule in (schedule_zb1p(pp, n), schedule_dualpipe(pp, n)):
        check_timeline(schedule, simulate(schedule, costs), pp, n)


def test_dualpipe_rank_holds_two_stages_and_overlaps_in_the_steady_state():
    schedule = schedule_dualpipe(8, 20)
    for rank, ops in enumerate(schedule):
        stages = {(t.direction, t.stage) for op in ops for t in op.tasks}
        assert stages == {(0, rank), (1, 7 - rank)}
        overlapped = [op for op in ops if op.kind == "FB"]
        assert overlapped and all({t.direction for t in op.tasks} == {0, 1} for op in overlapped)
        assert sum(op.kind in ("F", "FB") for op in ops) == 20  # 10 micro-batches x 2 stages


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="even"):
        schedule_dualpipe(5, 10)
    with pytest.raises(ValueError, match="even"):
        schedule_dualpipe(4, 6)  # fewer than 2 PP micro-batches
    backward_first = [[Op("B", (Task("B", 0, 0, 0),)), Op("F", (Task("F", 0, 0, 0),))],
                      [Op("F", (Task("F", 0, 0, 1),)), Op("B", (Task("B", 0, 0, 1),))]]
    with pytest.raises(ValueError, match="deadlock"):
        simulate(backward_first, Costs())
    with pytest.raises(ValueError, match="W <= B"):
        Costs(F=1, B=1, W=2, FB=2)


def test_nodes_per_token_for_v3_routing():
    """256 experts on 8 nodes, 8 chosen: exact distribution sums to 1 and matches its mean."""
    distribution = nodes_per_token(256, 8, 8)
    assert sum(distribution.values()) == 1
    mean = sum(j * p for j, p in distribution.items())
    assert float(mean) == pytest.approx(expected_nodes_per_token(256, 8, 8))
    all_elsewhere = 1.0  # P(no expert on a given node) = C(224, 8) / C(256, 8)
    for i in range(8):
        all_elsewhere *= (224 - i) / (256 - i)
    assert expected_nodes_per_token(256, 8, 8) == pytest.approx(8 * (1 - all_elsewhere))
    # Two experts out of 4 on 2 nodes: same node with probability 2 C(2,2) / C(4,2) = 1/3.
    assert nodes_per_token(4, 2, 2) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
