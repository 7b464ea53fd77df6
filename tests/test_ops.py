"""The kernel budget: ops dispatched per step, counted on the CPU (one op is one kernel on a GPU).

The counter is benchmarks/ops.py's (one implementation), loaded from its file.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from skd import MLP
from skd.training.guard import NonFiniteGuard

_FILE = Path(__file__).parent.parent / "benchmarks" / "ops.py"
_SPEC = importlib.util.spec_from_file_location("skd_bench_ops", _FILE)
ops = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ops)

LOSSES = ["kd", "tfkd", "dkd", "cakd", "dist", "r2kd"]


def test_the_counter_sees_one_op_per_kernel_of_cross_entropy():
    student = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    counted = ops.count_ops(lambda: F.cross_entropy(student, y, ignore_index=-1).backward())
    assert counted.kernels == 5, counted.counts


def guard_for(mode, deep=False):
    module = MLP(20, 3, hidden_units=(16,) * (6 if deep else 1))
    optimizer = torch.optim.Adam(module.parameters(), 1e-3, foreach=True)
    guard = NonFiniteGuard(mode, 8, module, lambda: optimizer, "cpu")
    return guard, module, optimizer


def one_step(guard, module, optimizer, values):
    optimizer.zero_grad()
    module(torch.randn(4, 20)).sum().backward()
    finite = guard.observe(values)
    guard.step(optimizer.step, lambda: finite)


@pytest.mark.parametrize("mode, budget", [("raise", 5), ("skip", 4)])
def test_the_guard_watches_a_batch_in_a_few_ops(mode, budget):
    guard, *_ = guard_for(mode)
    values = torch.tensor([0.5, 1.5, 2.0])
    total = values.sum()
    guard.observe(values, total)  # the first batch allocates the record of bad values
    assert ops.count_ops(guard.observe, values, total).kernels == budget


@pytest.mark.parametrize("values", [[0.5, 1.5], [float("nan"), 1.0], [float("inf"), 1.0],
                                    [float("inf"), float("-inf")], [3e38, 3e38], [-0.0, 0.0]])
def test_the_guard_judges_a_batch_by_its_total_as_by_its_terms(values):
    values = torch.tensor(values)
    by_terms = NonFiniteGuard("skip", 8, torch.nn.Linear(1, 1), None, "cpu").observe(values)
    by_total = NonFiniteGuard("skip", 8, torch.nn.Linear(1, 1), None, "cpu").observe(values, values.sum())
    overflow = bool(torch.isfinite(values).all()) and not bool(torch.isfinite(values.sum()))
    assert bool(by_total) == (bool(by_terms) and not overflow)  # a sum that overflows is non-finite too


@pytest.mark.parametrize("deep", [False, True])
def test_skip_checks_and_undoes_a_step_in_ten_ops_whatever_the_number_of_tensors(deep):
    guard, module, optimizer = guard_for("skip", deep)
    values = torch.tensor([1.0])
    for _ in range(2):  # optimizer state exists, the flat buffers are allocated
        one_step(guard, module, optimizer, values)
    finite = guard.observe(values)
    plain = ops.count_ops(optimizer.step).kernels
    guarded = ops.count_ops(guard.step, optimizer.step, lambda: finite).kernels
    # one flat copy (cat) before the step; after it, the finite check of the weights and optimizer
    # state (cat, sub, eq, all), the kept flag (logical_and), the count of bad updates (logical_xor,
    # add_) and the undo (where, _foreach_copy_): none per tensor
    assert guarded - plain == 10


def test_skip_restores_exactly_the_weights_and_state_before_a_bad_batch():
    guard, module, optimizer = guard_for("skip", deep=True)
    one_step(guard, module, optimizer, torch.tensor([1.0]))
    before = [t.clone() for t in [*module.parameters(), *ops_state(optimizer)]]
    one_step(guard, module, optimizer, torch.tensor([float("nan")]))
    after = [*module.parameters(), *ops_state(optimizer)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(guard.skipped) == 1


def ops_state(optimizer):
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def test_the_raise_guard_keeps_the_first_bad_batch_and_its_values():
    guard, *_ = guard_for("raise")
    for values in ([1.0, 2.0], [3.0, 4.0], [float("nan"), 5.0], [float("inf"), 6.0]):
        guard.observe(torch.tensor(values))
    assert not bool(guard.ok) and int(guard.good_batches) == 2
    assert guard.bad_values.tolist()[1] == 5.0


#: Eagerly, DKD's and CAKD's exact in-group log-softmax keep their forward + backward near 2-2.5x plain
#: KL, DIST's correlations near 4.7x and R2KD's soft ranks near 9x: the step of DIST and R2KD is over
#: budget too. The compiled loss's kernels (trainer__compile_loss=True, experimental) are counted by
#: benchmarks/ops.py and benchmarks/triton_kernels.py, not here: measurement, not a CI test.
EAGER_WITHIN = {"step": ("kd", "tfkd", "dkd", "cakd"), "loss": ("kd", "tfkd")}


@pytest.mark.parametrize("loss", EAGER_WITHIN["step"])
def test_the_eager_step_of_the_simpler_losses_is_within_the_budget(loss):
    hand = ops.hand_step_ops(256).kernels
    assert ops.skd_step_ops(loss, 256).kernels <= (1.1 if loss == "kd" else 1.5) * hand


@pytest.mark.parametrize("loss", EAGER_WITHIN["loss"])
def test_the_simpler_eager_losses_cost_at_most_one_and_a_half_plain_kl(loss):
    assert ops.loss_ops(loss, 100).kernels <= 1.5 * ops.reference_ops("kl", 100).kernels
