"""The sgs operator: Sites, Pipelines and Runs reconciled into Kubernetes Jobs (kopf).

Handlers (``handlers``) are thin; the decisions are the planner's (``sgs.planner``), the Job shape is
``jobs``, the compact status is ``status``, and the per-task records live in PostgreSQL (``records``).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
