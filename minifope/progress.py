"""Progress: a bar in the terminal, or reports to an experiment's board of runs.

Long work (training, loss by length, passkey by distance, the needle grid) takes `progress`:
True shows its own tqdm bar, False shows nothing, and a callable report(stage, done, total,
**info) is told instead. An experiment passes such a callable for each run, so that the runs it trains at
once, each in its own worker process, show on one board: a line per run with its stage
("train", "loss by length", ...), how far it is, and its loss and speed.

    board = RunBoard(["rope seed0", "alibi seed0"])
    board.report("rope seed0", "train", 120, 3000, loss=2.31, chars_s=9500.0)
"""

import time

from tqdm.auto import tqdm


class _Reported:
    """The part of a tqdm bar that the evaluations use (update, close, with), told to a report."""

    def __init__(self, report, stage, total):
        self.report, self.stage, self.total, self.n = report, stage, total, 0
        report(stage, 0, total)

    def update(self, n=1):
        self.n += n
        self.report(self.stage, self.n, self.total)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(progress, total, desc, unit):
    """A tqdm bar when progress is True, none when False, reports when it is a callable."""
    if callable(progress):
        return _Reported(progress, desc, total)
    return tqdm(total=total, disable=not progress, desc=desc, unit=unit, dynamic_ncols=True)


class RunBoard:
    """One line per run, updated from report(run, stage, done, total, **info).

    A line is redrawn at most every `interval` seconds (and whenever a stage starts or
    ends), which keeps a log file of the board short when stderr is not a terminal.
    """

    def __init__(self, runs, enabled=True, interval=0.5):
        self.interval = interval
        self.bars = {run: tqdm(total=1, desc=f"{run}: waiting", position=i, leave=True,
                               disable=not enabled, dynamic_ncols=True, unit="step")
                     for i, run in enumerate(runs)}
        self.stage = dict.fromkeys(runs)
        self.drawn = dict.fromkeys(runs, 0.0)

    def report(self, run, stage, done, total, **info):
        bar = self.bars[run]
        fresh = stage != self.stage[run]
        if fresh:  # a new stage: its own count, and no numbers left over from the last one
            self.stage[run] = stage
            bar.set_description(f"{run}: {stage}", refresh=False)
            bar.set_postfix({}, refresh=False)
            bar.unit = "step" if stage.endswith("train") else "it"
            bar.reset(total=total)
            bar.initial = bar.last_print_n = done  # a resumed run's rate counts from where it starts
        bar.total = total  # a run trained on past its first budget has a new total, same stage
        bar.n = done
        if info:
            bar.set_postfix({k: _short(v) for k, v in info.items() if v is not None}, refresh=False)
        now = time.monotonic()
        if fresh or done >= total or now - self.drawn[run] >= self.interval:
            bar.refresh()
            self.drawn[run] = now

    def close(self):
        for bar in self.bars.values():
            bar.close()


def _short(value):
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
    return value
