"""The learning-rate schedule: warm-up, then a cosine that ends at the last step."""

from itertools import pairwise

import pytest

from efficientdet.train.optim import cosine_lr

LR, INIT = 0.08, 0.008


def schedule(epochs: int, steps_per_epoch: int, warmup_epochs: int = 1, **kw) -> list[float]:
    total = epochs * steps_per_epoch
    return [cosine_lr(s, LR, INIT, warmup_epochs * steps_per_epoch, total, **kw) for s in range(total)]


def test_two_epochs_with_one_warmup_epoch_decay_through_the_whole_second_epoch():
    second = schedule(epochs=2, steps_per_epoch=5)[5:]
    assert second[0] == LR
    assert all(lr > 0 for lr in second)
    assert all(a > b for a, b in pairwise(second))


def test_the_last_epoch_of_twelve_still_trains():
    lrs = schedule(epochs=12, steps_per_epoch=4)
    assert all(lr > 0 for lr in lrs[-4:])
    assert all(a > b for a, b in pairwise(lrs[4:]))
    assert cosine_lr(48, LR, INIT, 4, 48) == 0.0  # the decay ends where training does


def test_warmup_is_linear_from_the_initial_rate():
    assert cosine_lr(0, LR, INIT, 10, 100) == INIT
    assert cosine_lr(5, LR, INIT, 10, 100) == pytest.approx((INIT + LR) / 2)


@pytest.mark.parametrize("step, expected", [(0, INIT), (10, 0.07758770483143634), (50, 0.03305407289332279),
                                            (90, 0.0), (95, 0.0006076898795116792), (99, 0.0019577393481938587)])
def test_official_schedule_keeps_the_unshifted_phase(step, expected):
    """tf2/train_lib.py CosineLrSchedule: 0.5 lr (1 + cos(pi step / (total - warmup))), unclamped."""
    assert cosine_lr(step, LR, INIT, 10, 100, official=True) == pytest.approx(expected, abs=1e-12)
