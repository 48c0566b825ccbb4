"""Entry point of the `sgs` command: one Typer app, each area adds its own sub-command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="sgs",
    help="sgs: a Kubernetes-native science ground segment.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register_subcommands() -> None:
    """Each area owns a module with a Typer app; registering here keeps `sgs --help` complete."""
    from sgs.cli import dev

    app.add_typer(dev.app, name="dev")
    from sgs.cli import pipeline

    app.command("compile")(pipeline.compile_command)
    app.add_typer(pipeline.run_app, name="run")
    app.command("status")(pipeline.status_command)
    app.command("crds")(pipeline.crds_command)
    from sgs.cli import operator

    app.command("operator")(operator.operator_command)
    operator.add_run_commands(pipeline.run_app)
    from sgs.cli.demo import demo_command

    app.command("demo")(demo_command)
    from sgs.cli.bridge import bridge_command

    app.command("bridge")(bridge_command)
    from sgs.cli.archive import app as archive_app

    app.add_typer(archive_app, name="archive")
    from sgs.cli.transfer import replicate_app, transfer_app

    app.add_typer(transfer_app, name="transfer")
    app.add_typer(replicate_app, name="replicate")
    from sgs.cli.placement import app as placement_app

    app.add_typer(placement_app, name="placement")
    from sgs.cli.storage import app as storage_app

    app.add_typer(storage_app, name="storage")
    from sgs.cli.console import console_command

    app.command("console")(console_command)
    from sgs.cli.trigger import trigger_command

    app.command("trigger")(trigger_command)
    from sgs.cli.task import app as task_app

    app.add_typer(task_app, name="task")
    from sgs.cli.images import app as images_app

    app.add_typer(images_app, name="images")
    from sgs.cli.challenge import challenge_command

    app.command("challenge")(challenge_command)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
