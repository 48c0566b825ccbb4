"""A single-host Slurm (Debian `slurm-wlm` + `munge`): munged, slurmctld and slurmd on 127.0.0.1.

Everything lives in the work directory and is found through `SLURM_CONF`; nothing in /etc is touched.
The settings that matter were measured on this platform (see docs/dev-stack.md): memory is enforced by
`OverMemoryKill` (no cgroups here), a GPU gres is backed by fake character devices, finished jobs stay
visible through `sacct -c` (jobcomp file) and `scontrol` (`MinJobAge`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil

from sgs.testing._process import ManagedProcess, PartError, free_port, make_traversable, wait_until
from sgs.testing.base import Part

GPU_COUNT = 2
TMP_DISK_MB = 1000
_INSTALL_HINT = "install Debian packages: apt-get install -y slurm-wlm munge (tools/ci-setup.sh does it)"


def _binary(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin"):
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PartError(f"slurm: {name} not found; {_INSTALL_HINT}")
    return found


def node_memory_mb() -> int:
    """What the node offers to jobs: available memory minus 1 GiB for the daemons and the test itself."""
    return max(1024, psutil.virtual_memory().available // 2**20 - 1024)


class SlurmPart(Part):
    """One Slurm cluster of one node (all CPUs, memory enforced, `gpu:2` gres, `--tmp`), two partitions."""

    name = "slurm"

    def __init__(self, workdir: Path | None = None, *, keep: bool = False) -> None:
        super().__init__(workdir, keep=keep)
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = node_memory_mb()
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.partitions = ("debug", "gpu")

    @property
    def conf_dir(self) -> Path:
        return self.workdir / "etc"

    @property
    def conf_file(self) -> Path:
        return self.conf_dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What Slurm client commands need besides the process environment."""
        return {"SLURM_CONF": str(self.conf_file)}

    def exports(self) -> dict[str, str]:
        return self.env

    def client_env(self) -> dict[str, str]:
        """The process environment plus SLURM_CONF: what a client command (sbatch, squeue) needs."""
        return {**os.environ, **self.env}

    def info(self) -> dict[str, Any]:
        return {
            "slurm_conf": str(self.conf_file),
            "node": self.node,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "gpus": GPU_COUNT,
            "partitions": list(self.partitions),
            "jobcomp": str(self.jobcomp_file),
        }

    @property
    def jobcomp_file(self) -> Path:
        return self.log_dir / "jobcomp.txt"

    def run(self, *argv: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster.

        The default working directory is the part's `jobs/`, so a job without `-o` writes its
        `slurm-<id>.out` there and not into the caller's checkout.
        """
        workdir = cwd or self.workdir / "jobs"
        workdir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            list(argv), env=self.client_env(), cwd=workdir, capture_output=True, text=True, check=check, timeout=60
        )

    def _start(self) -> None:
        self._make_dirs()
        self._start_munged()
        self._write_config()
        ctld = self._spawn(
            ManagedProcess(
                "slurmctld",
                [_binary("slurmctld"), "-D", "-i"],
                self.log_dir / "slurmctld.out",
                env=self.client_env(),
            )
        )
        wait_until(self._controller_answers, what="slurmctld to answer", timeout_s=30, process=ctld)
        slurmd = self._spawn(
            ManagedProcess(
                "slurmd",
                [_binary("slurmd"), "-D", "-N", self.node],
                self.log_dir / "slurmd.out",
                env=self.client_env(),
            )
        )
        wait_until(self._node_idle, what=f"node {self.node} to be idle", timeout_s=60, process=slurmd)

    def _before_stop(self) -> None:
        # Killing slurmd under running jobs orphans their slurmstepd: cancel and drain first.
        if not self.processes or not self.conf_file.exists():
            return
        self.run(_binary("scancel"), "--full", f"--user={os.getuid()}", check=False)
        with contextlib.suppress(PartError):  # stop anyway; the daemons' SIGTERM still ends the steps
            wait_until(self._queue_empty, what="the Slurm queue to drain", timeout_s=30)

    def _make_dirs(self) -> None:
        for sub in ("etc", "log", "state", "spool", "tmp", "dev", "run", "munge"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket dir that others cannot search (755), and a key others can read (600).
        (self.workdir / "munge").chmod(0o755)
        make_traversable(self.workdir / "munge")
        for index in range(GPU_COUNT):
            device = self.workdir / "dev" / f"gpu{index}"
            if not device.exists():
                # Fake GPUs: gres needs device files to count; /dev/null's numbers make them harmless.
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))

    def _start_munged(self) -> None:
        key = self.workdir / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge_dir = self.workdir / "munge"
        argv = [
            _binary("munged"),
            "-F",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={self.log_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ]
        process = self._spawn(ManagedProcess("munged", argv, self.log_dir / "munged.out"))
        wait_until(self.munge_socket.exists, what="the munge socket", timeout_s=20, process=process)

    def _write_config(self) -> None:
        self.conf_file.write_text(self._slurm_conf())
        (self.conf_dir / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu File={self.workdir}/dev/gpu[0-{GPU_COUNT - 1}]\n"
        )

    def _slurm_conf(self) -> str:
        d = self.workdir
        lines = [
            "ClusterName=sgs",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/run/slurmctld.pid",
            f"SlurmdPidFile={d}/run/slurmd.pid",
            f"SlurmctldLogFile={self.log_dir}/slurmctld.log",
            f"SlurmdLogFile={self.log_dir}/slurmd.log",
            f"TmpFS={d}/tmp",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            # Without a default, a job that gives no --mem is granted the whole node's memory.
            "DefMemPerCPU=100",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=task=1",
            # Without cgroups, only this makes Slurm kill a job that exceeds its memory.
            "JobAcctGatherParams=OverMemoryKill",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp_file}",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerParameters=sched_min_interval=0",
            "KillWait=2",
            "MinJobAge=300",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "GresTypes=gpu",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            f"TmpDisk={TMP_DISK_MB} Gres=gpu:{GPU_COUNT} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            # Cores are shared on the gpu partition so that GPUs, not the few CPUs of a test machine,
            # bound how many GPU jobs run at once.
            f"PartitionName=gpu Nodes={self.node} MaxTime=60 OverSubscribe=FORCE:4 State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _controller_answers(self) -> bool:
        return self.run(_binary("scontrol"), "ping", check=False).stdout.count("UP") > 0

    def _node_idle(self) -> bool:
        result = self.run(_binary("sinfo"), "-h", "-N", "-o", "%T", check=False)
        return result.returncode == 0 and "idle" in result.stdout.split()

    def _queue_empty(self) -> bool:
        result = self.run(_binary("squeue"), "-h", "-o", "%i", check=False)
        return result.returncode == 0 and not result.stdout.strip()
