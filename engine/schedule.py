"""Learning-rate schedule as a pure function of the step, so resuming needs no scheduler state."""

from __future__ import annotations

from bisect import bisect_right

from engine.config import ScheduleConfig


def lr_at(step: int, steps_per_epoch: int, base_lr: float, schedule: ScheduleConfig) -> float:
    """Linear warm-up over ``warmup_epochs``, then divide by 1/gamma at each milestone epoch."""
    epoch = step / steps_per_epoch
    decays = bisect_right(schedule.milestones, epoch)
    lr = base_lr * schedule.gamma**decays
    if schedule.warmup_epochs > 0 and epoch < schedule.warmup_epochs:
        lr *= (step + 1) / (schedule.warmup_epochs * steps_per_epoch)
    return lr
