"""A rich progress bar for a run: tasks done out of those known so far, with running and failed counts."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sgs.planner import Planner, TaskState


class RunProgress:
    def __init__(self, run_id: str, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.bar = self.progress.add_task(run_id, total=None, detail="")

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, planner: Planner) -> None:
        counts = planner.counts
        done = counts[TaskState.SUCCEEDED]
        detail = (
            f"[cyan]{counts[TaskState.RUNNING]} running[/] "
            f"[yellow]{counts[TaskState.RETRYING]} retrying[/] "
            f"[red]{counts[TaskState.FAILED]} failed[/] "
            f"[dim]{counts[TaskState.SKIPPED]} skipped[/]"
        )
        self.progress.update(self.bar, completed=done, total=len(planner.tasks), detail=detail)
