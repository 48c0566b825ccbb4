"""Dynamic-resource functions: named by Pipelines, taken from installed entry points, run in a sandbox.

A Pipeline's ``resources.dynamic.function`` is an entry-point *name* of the ``sgs.dynamic_resources`` group
(declared by a package: ``[project.entry-points."sgs.dynamic_resources"]``). Each executor maps names to code
from what is installed with it — the operator also through its administrator's allow-list — so a manifest can
never name arbitrary code; and the code runs in a subprocess without the executor's environment, credentials
or network (``sgs.dynamic.sandbox``).

The package imports nothing itself: the sandbox (``sgs.dynamic.child``) starts with as little as possible.
Modules: ``registry`` (names → installed functions), ``sandbox`` (the subprocess), ``resolve`` (the executors'
shared step), ``builtin`` (functions shipped with sgs).
"""
