"""One training step for everything that trains: the Trainer, the loop's records unchanged by it,
and no optimiser step anywhere else in the package."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from alkernels.loop.trainer import Trainer
from helpers import make_loop, without_timings

pytestmark = pytest.mark.usefixtures("one_thread")
PACKAGE = Path(__file__).resolve().parents[1] / "alkernels"
#: Records of seeded short runs made before the loop trained through the Trainer (tests/data).
RECORDED = json.loads((Path(__file__).parent / "data" / "loop_records.json").read_text())
RUNS = {
    "margin": ("margin", {}),
    "learning_loss": ("learning_loss", {}),
    "random-reset": ("random", {"reset_weights": True}),
    "bald-budget": ("bald", {"epoch_budget": 6.0}),
}


@pytest.mark.parametrize("key", sorted(RUNS))
def test_the_loops_seeded_records_are_unchanged(tmp_path: Path, key: str) -> None:
    strategy, kw = RUNS[key]
    got = without_timings(make_loop(tmp_path, strategy=strategy, name=key, **kw).run())
    want = RECORDED[key]
    assert [r["queried"] for r in got] == [r["queried"] for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k != "loss"} == {k: v for k, v in b.items() if k != "loss"}
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_no_optimiser_step_outside_the_trainer() -> None:
    step = re.compile(r"\b\w*(opt|optimizer)\w*\.step\(")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{k + 1}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "trainer.py"
        for k, line in enumerate(path.read_text().splitlines())
        if step.search(line)
    ]
    assert offenders == []


def test_trainer_steps_schedules_and_stops() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([4.0]))
    sched_opt = torch.optim.SGD([w], lr=0.1)
    trainer = Trainer(sched_opt, torch.optim.lr_scheduler.StepLR(sched_opt, step_size=1, gamma=0.5))
    seen: list[float] = []
    result = trainer.epoch(range(5), lambda _: (w**2).sum(), on_step=lambda loss: seen.append(float(loss)), max_steps=3)
    assert (result.steps, result.stopped) == (3, True) and len(seen) == 3
    assert result.mean_loss == pytest.approx(sum(seen) / 3)
    assert sched_opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert float(w.detach()) < 4.0
    state = trainer.state_dict()
    other = Trainer(torch.optim.SGD([w], lr=0.1), torch.optim.lr_scheduler.StepLR(sched_opt, step_size=1))
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="max_steps"):
        trainer.epoch([1], lambda _: w.sum(), max_steps=0)


def test_adamw_runs_multi_tensor_with_the_per_parameter_loops_numbers() -> None:
    """Trainer.adamw's default (foreach) gives bit-identical weights to PyTorch's CPU default (the
    per-parameter loop) over several steps of a small network; fused stays opt-in."""

    def train(**options: bool) -> tuple[Trainer, list[torch.Tensor]]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        trainer = Trainer.adamw(net.parameters(), lr=1e-2, weight_decay=0.01, **options)
        data = torch.randn(5, 6, 8, generator=torch.Generator().manual_seed(1))
        trainer.epoch(data, lambda x: net(x).square().mean())
        return trainer, [p.detach().clone() for p in net.parameters()]

    default, got = train()
    loop, want = train(foreach=False)
    assert default.optimizer.defaults["foreach"] is True and loop.optimizer.defaults["foreach"] is False
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    fused, _ = train(fused=True)
    assert fused.optimizer.defaults["fused"] is True and not fused.optimizer.defaults["foreach"]
