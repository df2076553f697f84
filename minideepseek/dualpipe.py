"""Pipeline-parallel schedules, simulated exactly: 1F1B, ZB1P and DualPipe (V3 report section 3.2.1).

Pipeline parallelism puts consecutive layers on consecutive ranks ("stages"). A
micro-batch runs forward through stage 0, 1, ..., PP-1, then backward in the
reverse order, so a rank waits while the others work: the **bubble**. A schedule is
the order in which each rank runs its passes; this module builds the schedules of
three methods as per-rank lists of operations and runs them on an event clock with
given costs, which yields the timeline, the bubble and the activation memory.

Costs, as in the report's Table 2 (all in the same time unit):

    F    forward of one stage on one micro-batch ("a forward chunk")
    B    full backward of one stage (input gradient and weight gradient)
    W    the weight-gradient part of B alone ("backward for weights")
    F&B  a forward and a backward of two micro-batches run overlapped on one rank

A zero-bubble schedule splits B into "backward for input" (cost B - W, on the
critical path: the previous stage waits for it) and W (cost W, needed by no other
rank, so it can fill a gap later).

The three methods:

* **1F1B**: after PP-1-s warm-up forwards, stage s alternates one forward and one backward.
  Bubble (PP-1)(F+B); each rank holds one stage (parameters 1x); stage 0 keeps PP
  micro-batches' activations.
* **ZB1P** (zero-bubble ZB-H1, Qi et al. 2023): 1F1B with B split; stage s runs each W
  s backwards late, filling the cool-down. Bubble (PP-1)(F+B-2W); 1x; PP.
* **DualPipe** (DeepSeek): micro-batches enter from *both* ends. Rank r holds stage r
  of the forward direction and stage PP-1-r of the reverse one (parameters 2x), and
  in the steady state runs one direction's forward overlapped with the other's
  backward (cost F&B), hiding the communication of each behind the computation of
  the other. Schedule from ``deepseek-ai/DualPipe`` (``dualpipe.py``, ``DualPipe.step``).

Communication is taken as free (fully overlapped): a pass may start as soon as the
pass it needs has finished on the neighbouring rank.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Costs:
    """Execution times of one stage's passes on one micro-batch (``F``, ``B``, ``W``, ``FB`` = F&B)."""

    F: float = 1.0
    B: float = 2.0
    W: float = 1.0
    FB: float = 2.5

    def __post_init__(self) -> None:
        if min(self.F, self.B, self.W, self.FB) < 0 or self.W > self.B:
            raise ValueError(f"costs must be non-negative with W <= B, got {self}")


@dataclass(frozen=True)
class Task:
    """One pass of one micro-batch through one stage.

    kind: "F" forward, "B" backward (for the input, and for the weights unless a W follows), "W" weight
    gradient; direction: 0 enters at rank 0, 1 at rank PP-1 (DualPipe only); stage: 0 .. PP-1 along
    its direction.
    """

    kind: str
    direction: int
    micro_batch: int
    stage: int


@dataclass(frozen=True)
class Op:
    """What a rank runs in one go. kind: "F", "B" (full backward), "I" (backward for the input only,
    its W later), "W", or "FB" (a forward and a full backward overlapped)."""

    kind: str
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class Slot:
    start: float
    end: float
    op: Op


@dataclass
class Timeline:
    """The simulated run: one list of slots per rank, in execution order."""

    ranks: list[list[Slot]] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max(slot.end for slots in self.ranks for slot in slots)

    def busy(self, rank: int) -> float:
        return sum(slot.end - slot.start for slot in self.ranks[rank])

    def bubble(self, rank: int) -> float:
        """Idle time of ``rank`` between the start of the step and its end (the makespan)."""
        return self.makespan - self.busy(rank)

    def peak_activations(self, rank: int) -> int:
        """Most micro-batch activations held at once on ``rank``, in units of one stage's activations.

        A micro-batch's activations at a stage live from the start of its forward until its
        backward (for the input) has finished.
        """
        events = []
        for slot in self.ranks[rank]:
            for task in slot.op.tasks:
                if task.kind == "F":
                    events.append((slot.start, 1))
                elif task.kind == "B":
                    events.append((slot.end, -1))
        held = peak = 0
        for _, change in sorted(events):  # at equal times a release (-1) sorts before an allocation
            held += change
            peak = max(peak, held)
        return peak


# --------------------------------------------------------------------------- the simulator
def _duration(op: Op, costs: Costs) -> float:
    return {"F": costs.F, "B": costs.B, "I": costs.B - costs.W, "W": costs.W, "FB": costs.FB}[op.kind]


def _needs(task: Task, n_stages: int) -> Task | None:
    """The pass that must finish before ``task`` can start (None: it can start at once)."""
    if task.kind == "F":
        return Task("F", task.direction, task.micro_batch, task.stage - 1) if task.stage > 0 else None
    if task.kind == "B":
        if task.stage == n_stages - 1:  # the loss is computed after the last stage's forward
            return Task("F", task.direction, task.micro_batch, task.stage)
        return Task("B", task.direction, task.micro_batch, task.stage + 1)
    return Task("B", task.direction, task.micro_batch, task.stage)  # W follows its own B


# --8<-- [start:simulate]
def simulate(schedule: list[list[Op]], costs: Costs) -> Timeline:
    """Run every rank's ops in order; an op starts when its rank is free and the passes it needs are done.

    schedule: one list of ``Op`` per rank (rank r runs stage r of direction 0 and stage PP-1-r of
    direction 1). Raises ValueError if the schedule deadlocks (some op waits for a pass never run).
    """
    n_ranks = len(schedule)
    finished: dict[Task, float] = {}
    clock = [0.0] * n_ranks
    timeline = Timeline([[] for _ in range(n_ranks)])
    pending = [deque(ops) for ops in schedule]
    progress = True
    while progress:
        progress = False
        for rank, ops in enumerate(pending):
            while ops:
                needed = [_needs(task, n_ranks) for task in ops[0].tasks]
                if any(need is not None and need not in finished for need in needed):
                    break  # wait for another rank
                op = ops.popleft()
                start = max([clock[rank]] + [finished[need] for need in needed if need is not None])
                clock[rank] = start + _duration(op, costs)
                for task in op.tasks:
                    finished[task] = clock[rank]
                timeline.ranks[rank].append(Slot(start, clock[rank], op))
                progress = True
    stuck = {rank: ops[0] for rank, ops in enumerate(pending) if ops}
    if stuck:
        raise ValueError(f"the schedule deadlocks; ranks wait at {stuck}")
    return timeline
# --8<-- [end:simulate]


# --------------------------------------------------------------------------- the schedules
def _check(pp: int, n: int, method: str, even: bool = False) -> None:
    if pp < 1 or n < 1:
        raise ValueError(f"{method}: need at least one stage and one micro-batch, got pp={pp}, n={n}")
    if even and (pp % 2 or n % 2 or n < 2 * pp):
        raise ValueError(f"{method} needs an even number of ranks and an even number of micro-batches n >= 2 pp "
                         f"(its two directions each take n/2), got pp={pp}, n={n}")


def schedule_1f1b(pp: int, n: int) -> list[list[Op]]:
    """1F1B on ``pp`` stages and ``n`` micro-batches (one direction)."""
    _check(pp, n, "1F1B")
    return [_one_forward_one_backward(stage, pp, n, weight_lag=None) for stage in range(pp)]


def schedule_zb1p(pp: int, n: int) -> list[list[Op]]:
    """ZB1P (zero-bubble ZB-H1): 1F1B with each backward split into B-for-input and W, stage s
    running its W passes s backwards late; the W passes still pending at the end run last."""
    _check(pp, n, "ZB1P")
    return [_one_forward_one_backward(stage, pp, n, weight_lag=stage) for stage in range(pp)]


# --8<-- [start:one_f_one_b]
def _one_forward_one_backward(stage: int, pp: int, n: int, weight_lag: int | None) -> list[Op]:
    def one(kind: str, micro_batch: int) -> Op:
        return Op(kind, (Task("F" if kind == "F" else "B" if kind in "BI" else "W", 0, micro_batch, stage),))

    warmup = min(pp - 1 - stage, n)
    ops = [one("F", mb) for mb in range(warmup)]
    forwards, backwards, weights = warmup, 0, 0
    while backwards < n:
        if forwards < n:
            ops.append(one("F", forwards))
            forwards += 1
        ops.append(one("B" if weight_lag is None else "I", backwards))
        backwards += 1
        if weight_lag is not None and backwards - weights > weight_lag:
            ops.append(one("W", weights))
            weights += 1
    while weight_lag is not None and weights < n:
        ops.append(one("W", weights))
        weights += 1
    return ops
# --8<-- [end:one_f_one_b]


def schedule_dualpipe(pp: int, n: int) -> list[list[Op]]:
    """DualPipe on ``pp`` ranks (even) with ``n`` micro-batches in all, n/2 entering from each end.

    A transcription of ``DualPipe.step`` (deepseek-ai/DualPipe): the same eight steps with the
    same counts, and the same choice of which backward passes are split (zero bubble).
    """
    _check(pp, n, "DualPipe", even=True)
    return [_DualPipeRank(rank, pp, n).ops for rank in range(pp)]


class _DualPipeRank:
    """The op list of one DualPipe rank. "Phase" 0/1 is the rank's first/second stage: for the first
    half of the ranks phase 0 is the forward direction, for the second half the reverse one."""

    def __init__(self, rank: int, pp: int, n: int):
        self.rank, self.pp = rank, pp
        self.in_second_half = rank >= pp // 2
        self.forwards, self.backwards = [0, 0], [0, 0]  # next micro-batch per direction
        self.weights: deque[Task] = deque()  # W passes owed by split backwards, first in first out
        self.ops: list[Op] = []
        self._build(n)

    # ---- the passes
    def _stage(self, direction: int) -> int:
        return self.rank if direction == 0 else self.pp - 1 - self.rank

    def _next(self, kind: str, phase: int) -> Task:
        direction = phase ^ self.in_second_half
        counter = self.forwards if kind == "F" else self.backwards
        task = Task(kind, direction, counter[direction], self._stage(direction))
        counter[direction] += 1
        return task

    def forward(self, phase: int) -> None:
        self.ops.append(Op("F", (self._next("F", phase),)))

    def backward(self, phase: int, zero_bubble: bool = False) -> None:
        task = self._next("B", phase)
        if zero_bubble:
            self.weights.append(Task("W", task.direction, task.micro_batch, task.stage))
        self.ops.append(Op("I" if zero_bubble else "B", (task,)))

    def weight(self) -> None:
        self.ops.append(Op("W", (self.weights.popleft(),)))

    def forward_backward(self, forward_phase: int, backward_phase: int) -> None:
        self.ops.append(Op("FB", (self._next("F", forward_phase), self._next("B", backward_phase))))

    # --8<-- [start:dualpipe_steps]
    def _build(self, n: int) -> None:
        half_ranks, half_chunks = self.pp // 2, n // 2
        half_rank = min(self.rank, self.pp - 1 - self.rank)  # distance from the nearer end
        middle = self.rank in (half_ranks - 1, half_ranks)
        for _ in range((half_ranks - half_rank - 1) * 2):  # step 1: nF0
            self.forward(0)
        for _ in range(half_rank + 1):  # step 2: nF0F1
            self.forward(0)
            self.forward(1)
        for _ in range(half_ranks - half_rank - 1):  # step 3: nB1W1F1 (zero bubble)
            self.backward(1, zero_bubble=True)
            self.weight()
            self.forward(1)
        for i in range(half_chunks - self.pp + half_rank + 1):  # step 4 (main): nF0B1F1B0
            if i == 0 and middle:  # not overlapped, to shrink the bubble
                self.forward(0)
                self.backward(1)
            else:
                self.forward_backward(0, 1)
            self.forward_backward(1, 0)
        for _ in range(half_ranks - half_rank - 1):  # step 5: nB1F1B0
            self.backward(1)
            self.forward_backward(1, 0)
        zero_bubble = False  # step 6: nB1B0, the second half with zero bubble
        for i in range(half_rank + 1):
            if i == (half_rank + 1) // 2 and half_rank % 2 == 1:
                zero_bubble = True
            self.backward(1, zero_bubble)
            if i == (half_rank + 1) // 2 and half_rank % 2 == 0:
                zero_bubble = True
            self.backward(0, zero_bubble)
        for _ in range(half_ranks - half_rank - 1):  # step 7: nWB0 (zero bubble)
            self.weight()
            self.backward(0, zero_bubble=True)
        for _ in range(half_rank + 1):  # step 8: nW
            self.weight()
        if self.weights:
            raise RuntimeError(f"DualPipe rank {self.rank} left {len(self.weights)} W passes unscheduled")
    # --8<-- [end:dualpipe_steps]


# --------------------------------------------------------------------------- the report's Table 2
SCHEDULES = {"1F1B": schedule_1f1b, "ZB1P": schedule_zb1p, "DualPipe": schedule_dualpipe}
PARAMETER_COPIES = {"1F1B": 1, "ZB1P": 1, "DualPipe": 2}


def table2_bubble(method: str, pp: int, costs: Costs) -> float:
    """The bubble column of the V3 report's Table 2 (and the DualPipe README)."""
    F, B, W, FB = costs.F, costs.B, costs.W, costs.FB
    return {"1F1B": (pp - 1) * (F + B), "ZB1P": (pp - 1) * (F + B - 2 * W),
            "DualPipe": (pp / 2 - 1) * (FB + B - 3 * W)}[method]


def table2_activations(method: str, pp: int) -> int:
    """The activation column of Table 2: peak micro-batch activations, in units of one stage's."""
    return pp + 1 if method == "DualPipe" else pp


@dataclass(frozen=True)
class Row:
    method: str
    bubble: float  # simulated: the largest idle time of any rank
    bubble_formula: float
    parameters: int  # stage copies per rank
    activations: int  # simulated peak on the busiest rank
    activations_formula: int
    makespan: float


def table2(pp: int, n: int, costs: Costs) -> list[Row]:
    """Simulate the three methods with ``n`` micro-batches on ``pp`` ranks and set each next to Table 2."""
    rows = []
    for method, schedule in SCHEDULES.items():
        timeline = simulate(schedule(pp, n), costs)
        rows.append(Row(method, max(timeline.bubble(r) for r in range(pp)), table2_bubble(method, pp, costs),
                        PARAMETER_COPIES[method], max(timeline.peak_activations(r) for r in range(pp)),
                        table2_activations(method, pp), timeline.makespan))
    return rows


def format_table2(rows: list[Row]) -> str:
    lines = [f"{'method':<9} {'bubble (sim)':>12} {'Table 2':>8} {'params':>6} {'activ. (sim)':>12} {'Table 2':>8}"]
    for r in rows:
        lines.append(f"{r.method:<9} {r.bubble:>12g} {r.bubble_formula:>8g} {r.parameters:>5}x "
                     f"{r.activations:>12} {r.activations_formula:>8}")
    return "\n".join(lines)
