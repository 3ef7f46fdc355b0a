"""Fitting a run to a time budget: the validation cadence, what the epochs after the first cost, the
most epochs that fit (exactly), and the plan the trainer calls after the first epoch."""

import time

import pytest

from efficientdet.train import TrainConfig
from efficientdet.train.budget import epochs_within, eval_every_for, fit_to_budget, seconds_after_first


@pytest.mark.parametrize("epochs, every", [(1, 1), (7, 1), (8, 2), (11, 2), (12, 3), (24, 6), (48, 12)])
def test_a_run_validates_about_four_times(epochs, every):
    assert eval_every_for(epochs) == every


@pytest.mark.parametrize("epochs, seconds", [
    (1, 0.0),  # the first epoch is behind
    (7, 6 * 10 + 6 * 3),  # every epoch validates
    (24, 23 * 10 + 4 * 3),  # epochs 6, 12, 18, 24
    (11, 10 * 10 + 6 * 3),  # epochs 2, 4, 6, 8, 10 and the last
])
def test_seconds_after_first_count_the_epochs_and_validations_still_to_come(epochs, seconds):
    assert seconds_after_first(epochs, epoch_s=10.0, eval_s=3.0) == pytest.approx(seconds)


def test_the_budget_is_bounded_by_low_and_high():
    assert epochs_within(1e9, 0.0, 10.0, 3.0, low=4, high=48) == 48
    assert epochs_within(60.0, 100.0, 10.0, 3.0, low=4, high=48) == 4  # already over: the least
    with pytest.raises(ValueError, match="1 <= low <= high"):
        epochs_within(60.0, 0.0, 10.0, 3.0, low=5, high=4)


@pytest.mark.parametrize("budget_s", [100.0, 180.0, 242.0, 300.0, 333.3, 480.0])
@pytest.mark.parametrize("elapsed_s, epoch_s, eval_s", [(30.0, 10.0, 3.0), (61.0, 36.2, 7.9), (5.0, 1.0, 10.0)])
def test_the_choice_is_the_most_epochs_that_fit(budget_s, elapsed_s, epoch_s, eval_s):
    chosen = epochs_within(budget_s, elapsed_s, epoch_s, eval_s, low=4, high=48)

    def fits(n):
        return elapsed_s + seconds_after_first(n, epoch_s, eval_s) <= budget_s

    assert fits(chosen) or chosen == 4
    assert not any(fits(n) for n in range(chosen + 1, 49))


def test_a_longer_run_that_validates_less_can_fit_where_a_shorter_one_does_not():
    """At 1 s an epoch and 10 s a validation, 7 epochs cost 66 s after the first, 8 epochs 47 s."""
    assert epochs_within(50.0, 0.0, 1.0, 10.0, low=4, high=48) == 8
    assert seconds_after_first(7, 1.0, 10.0) > 50.0


def test_the_plan_sets_the_length_and_cadence_and_says_why():
    lines = []
    plan = fit_to_budget(480.0, time.perf_counter() - 50.0, low=4, high=48, finish_s=10.0, log=lines.append)
    record = {"epoch": 1, "train_s": 36.0, "eval_s": 8.0, "images_per_s": 6.6}
    # 420 s left: 11 epochs take 10 × 36 + 6 × 8 = 408 s more, 12 take 11 × 36 + 4 × 8 = 428 s.
    assert plan(TrainConfig(epochs=48, eval_every=1), record) == TrainConfig(epochs=11, eval_every=2)
    assert lines == ["time budget 8 min: 50 s spent up to the end of epoch 1; an epoch trains in 36.0 s "
                     "(6.6 images/s), a validation takes 8.0 s; 11 epochs, validating every 2 epochs and after the "
                     "last, end in ≈ 7.8 min"]


def test_the_plan_names_a_bound_it_stops_at():
    lines = []
    record = {"epoch": 1, "train_s": 36.0, "eval_s": 8.0, "images_per_s": 6.6}
    fit_to_budget(60.0, time.perf_counter() - 50.0, low=4, high=48, finish_s=10.0, log=lines.append)(
        TrainConfig(), record)
    fit_to_budget(1e6, time.perf_counter(), low=4, high=48, finish_s=10.0, log=lines.append)(TrainConfig(), record)
    assert "4 epochs (the least: over the budget), validating after every epoch" in lines[0]
    assert "48 epochs (the most), validating every 12 epochs and after the last" in lines[1]
