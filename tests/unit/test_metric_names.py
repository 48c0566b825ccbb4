"""Every metric each deployable exports follows the naming rules (sgs.telemetry.metrics)."""

from __future__ import annotations

import prometheus_client
import pytest
import sgs_bridge.metrics  # noqa: F401  (registers the bridge's metrics on the default registry)
import sgs_operator.metrics  # noqa: F401  (idem, the operator's)
from prometheus_client import CollectorRegistry
from sgs_archive.metrics import ArchiveMetrics
from sgs_transfer.metrics import TransferMetrics
from sgs_trigger.metrics import TriggerMetrics

from sgs.telemetry.metrics import registry_problems


def registries() -> dict[str, CollectorRegistry]:
    return {
        "operator and bridge (default registry)": prometheus_client.REGISTRY,
        "archive": ArchiveMetrics().registry,
        "transfer": TransferMetrics().registry,
        "trigger": TriggerMetrics().registry,
    }


@pytest.mark.parametrize("component", sorted(registries()))
def test_metric_names_follow_the_conventions(component: str) -> None:
    registry = registries()[component]
    assert [str(problem) for problem in registry_problems(registry)] == []
