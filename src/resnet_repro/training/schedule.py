"""The paper's learning-rate schedules (multi-step, or / 10 on a plateau of the held-out error) and
the optional warm-up, as the trainer applies them; their state is part of a checkpoint."""

import math


class LearningRate:
    """The paper's schedules: multi-step in iterations, or / 10 when the error on a held-out slice
    of the training set stops improving (never decided on the split the tables report); with an
    optional warm-up: a small lr until the training error first falls below a threshold, for at
    most warmup.max_iters iterations."""

    def __init__(self, spec):
        self.base, self.sched, self.warmup = spec["lr"], spec["schedule"], spec.get("warmup")
        self.warming = self.warmup is not None
        self.warmup_end = None  # {"iteration", "by": "train_error" or "cap", "train_error"}
        self.drops, self.best, self.best_at = [], math.inf, 0  # drops: iterations of plateau drops

    def at(self, iteration):
        if self.warming:
            return self.warmup["lr"]
        if self.sched["kind"] == "multistep":
            drops = sum(iteration >= m for m in self.sched["milestones"])
        else:
            drops = len(self.drops)
        return self.base * self.sched.get("gamma", 0.1) ** drops

    def warmup_check_due(self, iteration):
        return self.warming and (iteration % self.warmup["check_every"] == 0 or iteration >= self.warmup["max_iters"])

    def observe_train_error(self, iteration, error):
        """At a warm-up check: how the warm-up ends now ("train_error", or "cap" when max_iters is
        reached with the error still above the threshold), or None while it goes on."""
        if not self.warming:
            return None
        if error < self.warmup["until_train_error"]:
            by = "train_error"
        elif iteration >= self.warmup["max_iters"]:
            by = "cap"
        else:
            return None
        self.warming = False
        self.warmup_end = {"iteration": iteration, "by": by, "train_error": error}
        return by

    def observe_holdout_error(self, iteration, error):
        """Plateau rule: / 10 when the held-out error has not improved by `threshold` points for
        `patience_iters` iterations (at most `max_drops` times); patience restarts at each drop."""
        if self.sched["kind"] != "plateau":
            return False
        if error < self.best - self.sched["threshold"]:
            self.best, self.best_at = error, iteration
            return False
        if iteration - self.best_at >= self.sched["patience_iters"] and len(self.drops) < self.sched["max_drops"]:
            self.drops.append(iteration)
            self.best_at = iteration
            return True
        return False

    def state_dict(self):
        return {
            "warming": self.warming,
            "warmup_end": self.warmup_end,
            "drops": self.drops,
            "best": self.best,
            "best_at": self.best_at,
        }

    def load_state_dict(self, s):
        self.warming, self.warmup_end = s["warming"], s["warmup_end"]
        self.drops, self.best, self.best_at = list(s["drops"]), s["best"], s["best_at"]


def warmup_capped(warmup, end):
    return (
        f"warm-up ended by its cap (warmup.max_iters={warmup['max_iters']}) at iteration {end['iteration']} "
        f"with training error {end['train_error']:.1f}%, not below {warmup['until_train_error']}%"
    )
