"""Real components for tests and the dev stack: PostgreSQL, NATS JetStream, MinIO, Kubernetes, Slurm,
Prometheus and Jaeger.

Each part is a class with start()/stop() (also a context manager) that runs the real daemon on free ports
in a work directory; `sgs.testing.fixtures` exposes them as pytest fixtures.
"""

from sgs.testing._process import PartError, free_port, wait_until
from sgs.testing.base import Part
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

__all__ = ["NatsPart", "Part", "PartError", "PostgresPart", "free_port", "wait_until"]
