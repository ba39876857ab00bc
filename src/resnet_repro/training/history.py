"""The rows of history.csv, one every log_every iterations (the step's sums, the evaluation, the
throughput, the elapsed time), written by process 0 and sent to a live MLflow run; the progress line."""

import csv
import io
import time

from resnet_repro.files import write_text
from resnet_repro.rundir import HISTORY
from resnet_repro.training import parallel

HISTORY_COLUMNS = [
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "holdout_error",
    "images_per_s",
    "elapsed_s",
]
LIVE_METRICS = ("train_error", "test_error", "train_loss", "test_loss", "lr", "holdout_error", "images_per_s")


def history_csv(history):
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class History:
    """The rows of history.csv, one every log_every iterations: the sums Step keeps on the device,
    the evaluation, the throughput of the window since the last row (training only) and the elapsed
    time (evaluation included, over every resume). Process 0 writes the file and the live MLflow rows."""

    def __init__(self, rows, elapsed, out_dir, live):
        self.rows, self.elapsed, self.out_dir, self.live = rows, elapsed, out_dir, live
        self.start()

    def start(self):
        self.t0 = time.perf_counter()
        self.new_window()

    def new_window(self):
        self.window_start, self.images, self.window_iters = time.perf_counter(), 0, 0

    def count(self, images):
        self.images += images
        self.window_iters += 1

    def record(self, iteration, step, data, eval_bf16):
        """Append the row at `iteration` (evaluating the model now); every process calls this."""
        train_time = time.perf_counter() - self.window_start
        loss_sum, wrong_sum, count = parallel.summed(step.acc).tolist()
        step.acc.zero_()
        test_loss, test_error, holdout_error = data.evaluate(step.model, eval_bf16, step.channels_last)
        self.elapsed += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        self.seconds_per_iter = train_time / self.window_iters
        row = {
            "iteration": iteration,
            "epoch": data.batches.epoch,
            "lr": step.opt.param_groups[0]["lr"],
            "train_loss": loss_sum / count,
            "train_error": 100.0 * wrong_sum / count,
            "test_loss": test_loss,
            "test_error": test_error,
            "holdout_error": "" if data.holdout is None else holdout_error,
            "images_per_s": self.images / train_time,
            "elapsed_s": self.elapsed,
        }
        self.rows.append(row)
        if parallel.WORLD.main:
            write_text(self.out_dir / HISTORY, history_csv(self.rows))
        if self.live:
            self.live.row(row, LIVE_METRICS)
        return row


def progress_line(spec, row, data, seconds_per_iter):
    eta = (spec["max_iters"] - row["iteration"]) * seconds_per_iter
    return (
        f"[{spec['model']}] it {row['iteration']}/{spec['max_iters']} lr {row['lr']:.4g} "
        f"loss {row['train_loss']:.3f} train {row['train_error']:.2f}% {data.test_split} {row['test_error']:.2f}% "
        + ("" if data.holdout is None else f"held-out {row['holdout_error']:.2f}% ")
        + f"| {row['images_per_s']:.0f} img/s | ETA {_fmt_time(eta)}"
    )
