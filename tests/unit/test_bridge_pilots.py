"""Pilot mode's pure parts: the settings (the seed's pipelinerunner.pilots.* keys), the payload order by fitness,
starving mode, the walltime guard, and how many pilots to submit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from sgs_bridge.pilot_config import FitnessWeights, PilotConfigError, load_pilot_settings, settings_from_tree
from sgs_bridge.pilot_schedule import Payload, PilotRoom, TemplateCount, choose, fitting_templates, pilots_to_submit

GIB = 2**30
SEED_PROPERTIES = """
# mc huge template pipelinerunner.pilots.mc_huge.maxInstances=0 to disable
pipelinerunner.pilots.heavy.CPUcores=22
pipelinerunner.pilots.heavy.rssInMB=66000
pipelinerunner.pilots.heavy.walltimeInMin=10080
pipelinerunner.pilots.heavy.maxInstances=100
pipelinerunner.pilots.heavy.maxQueued=50
pipelinerunner.pilots.mc_huge.CPUcores=64
pipelinerunner.pilots.mc_huge.rssInMB=256000
pipelinerunner.pilots.mc_huge.walltimeInMin=600
pipelinerunner.pilots.mc_huge.maxInstances=0
pipelinerunner.pilots.mc_huge.maxQueued=0
pipelinerunner.pilots.weights.waiting=2.5
"""


def template(
    cores: int = 4, rss_mb: int = 8192, minutes: int = 60, instances: int = 4, queued: int = 2
) -> dict[str, int]:
    return {
        "CPUcores": cores,
        "rssInMB": rss_mb,
        "walltimeInMin": minutes,
        "maxInstances": instances,
        "maxQueued": queued,
    }


def tree(**templates: Mapping[str, object]) -> dict[str, object]:
    return {"pipelinerunner": {"pilots": templates}}


def payload(uid: str, cpus: float = 1, gib: float = 1, seconds: float = 60, waited: float = 0, **kw: object) -> Payload:
    return Payload(uid, cpus, int(gib * GIB), seconds, queued_at=-waited, **kw)  # type: ignore[arg-type]


def room(free_cpus: float = 4, free_gib: float = 8, remaining_s: float = 3600, starving: bool = False) -> PilotRoom:
    return PilotRoom(4, 8 * GIB, free_cpus, int(free_gib * GIB), remaining_s, starving)


def test_the_seed_properties_file_loads_with_its_own_key_names(tmp_path: Path) -> None:
    path = tmp_path / "pilots.properties"
    path.write_text(SEED_PROPERTIES)
    settings = load_pilot_settings(path)
    heavy = settings.templates["heavy"]
    assert (heavy.cpu_cores, heavy.rss_mb, heavy.walltime_min, heavy.max_instances, heavy.max_queued) == (
        22,
        66000,
        10080,
        100,
        50,
    )
    assert list(settings.enabled) == ["heavy"]  # maxInstances=0 disables mc_huge, as in the seed
    assert settings.weights.waiting == 2.5


def test_yaml_gives_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "pilots.yaml"
    path.write_text(
        "pipelinerunner:\n  pilots:\n    small: {CPUcores: 2, rssInMB: 1024, walltimeInMin: 30, "
        "maxInstances: 2, maxQueued: 1}\n    policy: {marginInSec: 5}\n"
    )
    settings = load_pilot_settings(path)
    assert settings.templates["small"].walltime_s == 1800
    assert settings.policy.margin_s == 5


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (tree(heavy={**template(), "CPUcores": 0}), "pipelinerunner.pilots.heavy.CPUcores"),
        (tree(heavy={**template(), "rssInMB": "lots"}), "pipelinerunner.pilots.heavy.rssInMB"),
        (
            tree(heavy={k: v for k, v in template().items() if k != "walltimeInMin"}),
            "heavy.walltimeInMin: Field required",
        ),
        (tree(heavy={**template(), "cpuCores": 2}), "pipelinerunner.pilots.heavy.cpuCores: Extra inputs"),
        (tree(heavy=template(), weights={"cpu": -1}), "pipelinerunner.pilots.weights.cpu: Input should be greater"),
        ({"pipelinerunner": {"pilots": {"weights": {"cpu": 1}}}}, "no pilot template"),
        ({"pilots": {}}, "expected keys under pipelinerunner.pilots"),
    ],
)
def test_bad_settings_name_the_key(body: dict[str, object], named: str) -> None:
    with pytest.raises(PilotConfigError, match=named.replace(".", r"\.")):
        settings_from_tree(body, "pilots.yaml")


def test_a_malformed_properties_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.properties"
    path.write_text("pipelinerunner.pilots.heavy.CPUcores=2\npipelinerunner.heavy=3\n")
    with pytest.raises(PilotConfigError, match=r"p\.properties:2: 'pipelinerunner\.heavy'"):
        load_pilot_settings(path)


def test_fitness_prefers_the_bigger_share_then_the_longer_wait_and_a_retry_first() -> None:
    weights = FitnessWeights()
    small, big = payload("small", cpus=1, gib=1), payload("big", cpus=3, gib=4)
    assert [p.uid for p in choose([small, big], room(), weights, 60, now=0)] == ["big", "small"]
    old = payload("old", waited=600)
    assert [p.uid for p in choose([payload("new"), old], room(free_cpus=1), weights, 60, now=0)] == ["old"]
    retry = payload("retry", retry=True)
    assert choose([big, retry], room(free_cpus=3), weights, 60, now=0)[0].uid == "retry"


def test_nothing_starts_that_cannot_finish_before_the_pilot_ends() -> None:
    long, short = payload("long", seconds=3000), payload("short", seconds=100)
    chosen = choose([long, short], room(remaining_s=1000), FitnessWeights(), margin_s=60, now=0)
    assert [p.uid for p in chosen] == ["short"]
    assert choose([short], room(remaining_s=150), FitnessWeights(), margin_s=60, now=0) == []


def test_what_is_chosen_fits_the_free_room_together() -> None:
    many = [payload(f"p{i}", cpus=1, gib=3) for i in range(5)]
    chosen = choose(many, room(free_cpus=4, free_gib=8), FitnessWeights(), 60, now=0)
    assert len(chosen) == 2  # memory binds: 3 GiB each of 8 free


def test_a_starving_pilot_holds_its_room_for_the_biggest_then_fills_with_the_smallest() -> None:
    big, small, tiny = payload("big", cpus=3, gib=6), payload("small", cpus=1, gib=1), payload("tiny", 0.5, 0.5)
    held = choose([big, small, tiny], room(free_cpus=2, starving=True), FitnessWeights(), 60, now=0)
    assert held == []  # the big one does not fit yet: the small ones do not take its room
    served = choose([big, small, tiny], room(starving=True), FitnessWeights(), 60, now=0)
    assert [p.uid for p in served] == ["big", "tiny"]
    normal = choose([big, small, tiny], room(free_cpus=2), FitnessWeights(), 60, now=0)
    assert [p.uid for p in normal] == ["small", "tiny"]


def test_the_smallest_fitting_template_serves_a_payload() -> None:
    settings = settings_from_tree(
        tree(small=template(cores=2), large=template(cores=16, rss_mb=65536), off=template(instances=0))
    )
    assert [name for name, _ in fitting_templates(payload("p", cpus=1), settings.templates, 60)] == ["small", "large"]
    assert [name for name, _ in fitting_templates(payload("p", cpus=8), settings.templates, 60)] == ["large"]
    assert fitting_templates(payload("p", cpus=32), settings.templates, 60) == []
    assert fitting_templates(payload("p", seconds=3590), settings.templates, 60) == []  # margin included


def test_pilots_are_submitted_for_the_demand_within_max_queued_and_max_instances() -> None:
    settings = settings_from_tree(tree(small=template(cores=2, instances=3, queued=2)))
    waiting = [payload(f"p{i}", cpus=1, gib=1) for i in range(9)]  # 9 cores: 5 pilots of 2
    none = TemplateCount(0, 0)
    assert pilots_to_submit(waiting, settings.templates, {"small": none}, 60, 10) == ["small", "small"]
    assert pilots_to_submit(waiting, settings.templates, {"small": TemplateCount(1, 2)}, 60, 10) == ["small"]
    assert pilots_to_submit(waiting, settings.templates, {"small": TemplateCount(0, 3)}, 60, 10) == []
    assert pilots_to_submit(waiting[:1], settings.templates, {"small": TemplateCount(1, 1)}, 60, 10) == []
    assert pilots_to_submit([], settings.templates, {}, 60, 10) == []
