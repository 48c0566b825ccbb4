"""`sgs bridge`: run the virtual-kubelet bridge (a Kubernetes node whose pods run on Slurm or as processes)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="bridge", help="Run the virtual-kubelet bridge.", add_completion=False)


def bridge_command(
    node_name: Annotated[str, typer.Option("--node-name", help="Name of the virtual node, e.g. sgs-site-a.")],
    site: Annotated[str, typer.Option("--site", help="Site this node belongs to (label sgs.io/site).")],
    provider: Annotated[str, typer.Option("--provider", help="Backend: process or slurm.")] = "process",
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Kubeconfig (default: $KUBECONFIG, in-cluster).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="HTTPS port of the kubelet API (logs, metrics).")] = 10250,
    address: Annotated[str, typer.Option("--address", help="Address the API server reaches us at.")] = "127.0.0.1",
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="Also serve /metrics over plain HTTP on this port (for Prometheus); 0: only on the kubelet port.",
        ),
    ] = 0,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Pod directories and TLS files (default ~/.cache/sgs/bridge/N).")
    ] = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between backend sweeps.")] = 1.0,
    gpus: Annotated[int, typer.Option("--gpus", help="process provider: GPUs to advertise.")] = 0,
    container_runtime: Annotated[
        str,
        typer.Option(
            "--container-runtime",
            help="'crun' runs each pod's image (from an --image-store) in a container, as a local process "
            "(process provider) or inside its sbatch job (slurm, not with --pilots or --apptainer); "
            "'none' runs the pod's command.",
        ),
    ] = "none",
    image_store: Annotated[
        list[Path] | None,
        typer.Option(
            "--image-store",
            help="with --container-runtime: a directory of OCI layouts pods' images may come from "
            "(repeatable; e.g. the sgs image cache ~/.cache/sgs/images). Any other image is refused.",
        ),
    ] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="slurm: default partition.")] = None,
    gpu_partition: Annotated[str | None, typer.Option("--gpu-partition", help="slurm: partition for GPU pods.")] = None,
    sbatch_arg: Annotated[list[str] | None, typer.Option("--sbatch-arg", help="slurm: extra sbatch option.")] = None,
    apptainer: Annotated[
        str | None,
        typer.Option(
            "--apptainer",
            help="slurm: run a pod's command in the image its SGS_IMAGE variable names, with this apptainer "
            "binary (the operator sets none: without it, commands run directly).",
        ),
    ] = None,
    client_ca_file: Annotated[
        Path | None,
        typer.Option(
            "--client-ca-file",
            help="CA bundle that signs the API server's kubelet client certificate (default: the cluster CA).",
        ),
    ] = None,
    pilots: Annotated[
        Path | None,
        typer.Option(
            "--pilots",
            help="slurm: pilot mode, with the templates in this file (pipelinerunner.pilots.<template>.CPUcores="
            "..., rssInMB, walltimeInMin, maxInstances, maxQueued; properties or YAML).",
        ),
    ] = None,
    pilot_address: Annotated[
        str | None,
        typer.Option("--pilot-address", help="slurm pilots: address agents reach (default --address)."),
    ] = None,
    pilot_port: Annotated[int, typer.Option("--pilot-port", help="slurm pilots: port for their agents (0: any).")] = 0,
    api_concurrency: Annotated[
        int, typer.Option("--api-concurrency", help="Submissions and status writes in flight at once.")
    ] = 32,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Register NODE_NAME and run its pods on the chosen backend until interrupted."""
    from sgs_bridge.bridge import BridgeConfig

    if provider not in ("process", "slurm"):
        raise typer.BadParameter("must be 'process' or 'slurm'", param_hint="--provider")
    if not 0 <= metrics_port <= 65535 or (metrics_port and metrics_port == port):
        raise typer.BadParameter("must be 0 (off) or a port other than --port", param_hint="--metrics-port")
    if api_concurrency < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--api-concurrency")
    if poll_interval <= 0:
        raise typer.BadParameter("must be positive", param_hint="--poll-interval")
    if container_runtime not in ("none", "crun"):
        raise typer.BadParameter("must be 'none' or 'crun'", param_hint="--container-runtime")
    if container_runtime != "none" and (pilots is not None or apptainer):
        raise typer.BadParameter("not with --pilots or --apptainer", param_hint="--container-runtime")
    if container_runtime != "none" and not image_store:
        raise typer.BadParameter("needs at least one --image-store", param_hint="--container-runtime")
    if pilots is not None:
        if provider != "slurm":
            raise typer.BadParameter("pilot mode needs --provider slurm", param_hint="--pilots")
        from sgs_bridge.pilot_config import PilotConfigError, load_pilot_settings

        try:
            load_pilot_settings(pilots)
        except PilotConfigError as error:
            raise typer.BadParameter(str(error), param_hint="--pilots") from error
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = BridgeConfig(
        node_name=node_name,
        site=site,
        provider=provider,
        kubeconfig=kubeconfig,
        port=port,
        address=address,
        metrics_port=metrics_port,
        workdir=workdir,
        poll_interval_s=poll_interval,
        gpus=gpus,
        container_runtime=container_runtime,
        image_stores=list(image_store or []),
        slurm_partition=partition,
        slurm_gpu_partition=gpu_partition,
        slurm_extra_args=list(sbatch_arg or []),
        apptainer=apptainer,
        client_ca=client_ca_file,
        submit_concurrency=api_concurrency,
        pilots=pilots,
        pilot_address=pilot_address,
        pilot_port=pilot_port,
    )
    asyncio.run(_serve(config))


async def _serve(config: object) -> None:
    from sgs_bridge.bridge import Bridge, BridgeConfig

    assert isinstance(config, BridgeConfig)
    task = asyncio.create_task(Bridge(config).run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logging.getLogger("sgs_bridge").info("stopped; running jobs keep running and are re-adopted on restart")


app.command()(bridge_command)
