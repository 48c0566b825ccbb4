import subprocess
from pathlib import Path

import pytest

from sgs.testing import wait_until
from sgs.testing.slurm import SlurmPart

pytestmark = pytest.mark.integration


def submit(slurm: SlurmPart, *args: str) -> str:
    result = slurm.run("sbatch", "--parsable", *args)
    return result.stdout.strip().split(";")[0]


def job(slurm: SlurmPart, job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Reason, ExitCode, ...)."""
    line = slurm.run("scontrol", "show", "job", "-o", job_id).stdout.strip()
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def wait_for_state(slurm: SlurmPart, job_id: str, states: set[str], timeout_s: float = 60) -> dict[str, str]:
    wait_until(
        lambda: job(slurm, job_id)["JobState"] in states,
        what=f"job {job_id} in {states}",
        timeout_s=timeout_s,
    )
    return job(slurm, job_id)


def test_sbatch_wrap_completes_and_sacct_shows_it(slurm: SlurmPart, tmp_path: Path) -> None:
    job_id = submit(slurm, "-o", str(tmp_path / "%j.out"), "--wrap", "echo hello from $SLURM_JOB_ID; exit 3")
    final = wait_for_state(slurm, job_id, {"COMPLETED", "FAILED"})
    assert final["ExitCode"] == "3:0"
    assert (tmp_path / f"{job_id}.out").read_text().strip() == f"hello from {job_id}"

    def accounted() -> bool:
        return any(line.split()[:1] == [job_id] for line in slurm.run("sacct", "-c").stdout.splitlines())

    wait_until(accounted, what=f"sacct -c to list job {job_id}", timeout_s=30)


def test_two_gpu_jobs_run_and_a_third_waits_for_resources(slurm: SlurmPart, tmp_path: Path) -> None:
    gpu_job = ["-p", "gpu", "--gres=gpu:1", "--mem=100", "-o", str(tmp_path / "%j.out")]
    script = "echo CUDA=$CUDA_VISIBLE_DEVICES; sleep 60"
    running = [submit(slurm, *gpu_job, "--wrap", script) for _ in range(2)]
    # Cores are shared on this partition: a CPU-only job still starts beside the two GPU jobs, so when
    # the third GPU job waits, it waits for a GPU and not for cores.
    cpu_only = submit(slurm, "-p", "gpu", "--mem=100", "-o", "/dev/null", "--wrap", "sleep 60")
    third = submit(slurm, *gpu_job, "--wrap", script)
    try:
        for job_id in [*running, cpu_only]:
            wait_for_state(slurm, job_id, {"RUNNING"})
        wait_until(lambda: job(slurm, third)["Reason"] == "Resources", what="a scheduling pass", timeout_s=20)
        assert job(slurm, third)["JobState"] == "PENDING"

        def devices_reported() -> bool:
            return all((tmp_path / f"{j}.out").is_file() and (tmp_path / f"{j}.out").read_text() for j in running)

        wait_until(devices_reported, what="both GPU jobs to print CUDA_VISIBLE_DEVICES", timeout_s=30)
        devices = {(tmp_path / f"{j}.out").read_text().strip() for j in running}
        assert devices == {"CUDA=0", "CUDA=1"}
    finally:
        slurm.run("scancel", *running, cpu_only, third, check=False)


def test_job_over_its_memory_is_killed(slurm: SlurmPart, tmp_path: Path) -> None:
    hog = "python3 -c 'import time; x = b\"a\" * (400 * 2**20); time.sleep(30)'"
    job_id = submit(slurm, "--mem=100", "-o", str(tmp_path / "%j.out"), "--wrap", hog)
    final = wait_for_state(slurm, job_id, {"FAILED", "OUT_OF_MEMORY", "CANCELLED", "COMPLETED"}, timeout_s=40)
    assert final["JobState"] in {"FAILED", "OUT_OF_MEMORY"}
    assert "exceeded memory limit" in (tmp_path / f"{job_id}.out").read_text()


def test_tmp_disk_request_is_honoured(slurm: SlurmPart) -> None:
    fits = submit(slurm, "--tmp=500M", "-o", "/dev/null", "--wrap", "true")
    assert wait_for_state(slurm, fits, {"COMPLETED", "FAILED"})["JobState"] == "COMPLETED"
    with pytest.raises(subprocess.CalledProcessError) as refused:
        submit(slurm, "--tmp=5G", "--wrap", "true")
    assert "Requested node configuration is not available" in refused.value.stderr
