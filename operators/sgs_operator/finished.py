"""What becomes of a Job once its outcome is in the task table (``finished_jobs``, ``failed_job_ttl_s``).

By default a Job that succeeded is deleted at once (its pod with it): a 100k-task Run leaves nothing behind in
etcd. A failed one is kept for people to inspect its pod and logs, and left to the cluster's TTL controller
(``ttlSecondsAfterFinished``), so its deletion needs no operator and survives restarts. Only a Job whose
outcome is recorded is touched: deleting one before would make its task look lost, and run again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sgs_operator.kube import Kube
from sgs_operator.observe import JobSeen
from sgs_operator.settings import FinishedJobs, OperatorSettings


@dataclass
class JobDisposal:
    kube: Kube
    settings: OperatorSettings
    namespace: str
    done: set[str] = field(default_factory=set)  # Jobs already deleted or handed to the TTL controller

    async def dispose(self, job: str, succeeded: bool) -> None:
        self.done.add(job)
        if self.settings.finished_jobs is FinishedJobs.KEEP:
            return
        if succeeded or self.settings.failed_job_ttl_s == 0:
            await self.kube.delete_job(self.namespace, job)
        else:
            await self.kube.expire_job(self.namespace, job, self.settings.failed_job_ttl_s)

    async def leftovers(self, jobs: Mapping[str, JobSeen], running: Collection[str]) -> None:
        """Finished Jobs no task waits for: recorded before a restart, or kept under an earlier setting."""
        if self.settings.finished_jobs is FinishedJobs.KEEP:
            return
        for name, job in jobs.items():
            if job.finished is not None and name not in running and name not in self.done:
                await self.dispose(name, job.finished == "Complete")
