"""`sgs demo --stack` without a stack: the Pipeline it applies, the dither split step, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgs.cli.main import app
from sgs.demo.stack import (
    SITE_LABEL,
    StackError,
    StackOptions,
    StackTarget,
    find_stack,
    nir_pipeline_manifest,
    runs_table,
    stack_plan,
)
from sgs.model.pipeline import Pipeline
from sgs.nir.steps.dithers import main as split_main

SITES = ("site-a", "site-b", "site-c")


def target(tmp_path: Path) -> StackTarget:
    return StackTarget("kubeconfig", "http://archive", "token", SITES, {s: tmp_path / s for s in SITES}, None)


class Files:
    def __init__(self, root: Path, tile: int) -> None:
        self.mdb, self.master_dark = root / "mdb.fits", root / "dark.fits"
        self.refcat = root / f"refcat{tile}.xml"


def test_the_pipeline_takes_the_dithers_as_one_list_and_registers_only_stack_and_catalogue(tmp_path: Path) -> None:
    plan = stack_plan(target(tmp_path), StackOptions(observations=3, tiles=2))
    files = {o.number: Files(o.primary.store, o.tile_number) for o in plan.observations}
    manifest = nir_pipeline_manifest(plan, files)  # type: ignore[arg-type]

    spec = Pipeline.model_validate(manifest).spec  # admission's own model: triggers bind every required input
    assert [i.name for i in spec.inputs] == ["exposures", "mdb", "masterDark", "catalog"]
    registered = {(e.name, o.dataset_type) for e in spec.executables for o in e.outputs if o.register_dataset}
    assert registered == {("doStack", "nir_stack"), ("catalogPhot", "nir_catalog")}
    bound = [ref for step in spec.steps for b in step.inputs.values() for ref in b.refs()]
    assert not [r for r in bound if r.input and r.input.startswith("dither")]
    assert sum(r.step == "splitDithers" for r in bound) == 4
    wanted = {(o.primary.name, o.tile_number) for o in plan.observations}
    assert {(t.sites, t.where) for t in spec.triggers} == {(f"{SITE_LABEL}={s}", f"tile = {n}") for s, n in wanted}
    for trigger in spec.triggers:
        site = trigger.sites.split("=")[1] if trigger.sites else ""
        assert trigger.input == "exposures" and trigger.complete.count == 4
        assert all(str(tmp_path / site) in (i.uri or "") for i in trigger.inputs.values())  # files at its Site
    assert all(o.primary.store.is_relative_to(tmp_path / o.primary.name) for o in plan.observations)


def test_the_split_step_copies_four_dithers_and_refuses_three(tmp_path: Path) -> None:
    raws = []
    for i in range(4):
        raws.append(tmp_path / f"raw{i}.fits")
        raws[-1].write_text(f"dither {i}")
    listed = tmp_path / "exposures.json"
    listed.write_text(json.dumps([str(p) for p in raws]))
    outs = [f"--dither{i}={tmp_path / f'out{i}.fits'}" for i in range(1, 5)]

    assert split_main([f"--exposures={listed}", *outs]) == 0
    assert [(tmp_path / f"out{i}.fits").read_text() for i in range(1, 5)] == [f"dither {i}" for i in range(4)]

    listed.write_text(json.dumps([str(p) for p in raws[:3]]))
    assert split_main([f"--exposures={listed}", *outs]) == 1
    listed.write_text(json.dumps({"not": "a list"}))
    assert split_main([f"--exposures={listed}", *outs]) == 1


def test_no_stack_is_an_error_naming_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGS_CACHE", str(tmp_path / "cache"))
    for key in ("KUBECONFIG", "SGS_ARCHIVE_URL", "SGS_ARCHIVE_ADMIN_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(StackError, match=r"KUBECONFIG, SGS_ARCHIVE_URL, SGS_ARCHIVE_ADMIN_TOKEN not set.*sgs dev up"):
        find_stack()

    result = CliRunner().invoke(app, ["demo", "--stack"])
    assert result.exit_code == 2 and "no stack" in result.output


def test_an_unreachable_archive_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgs.testing import free_port

    monkeypatch.setenv("SGS_CACHE", str(tmp_path / "cache"))
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("SGS_ARCHIVE_URL", url)
    monkeypatch.setenv("SGS_ARCHIVE_ADMIN_TOKEN", "x" * 32)
    result = CliRunner().invoke(app, ["demo", "--stack"])
    assert result.exit_code == 2 and f"archive {url} unreachable" in result.output


def test_the_runs_table_shows_each_runs_trigger_group_and_progress() -> None:
    from rich.console import Console

    group = '{"key":{"instrument":"NISP-SIM","observation":2},"site":"site-b","trigger":"site-b-tile2"}'
    run = {
        "metadata": {
            "name": "nir-a91595e00a3d",
            "labels": {"sgs.io/trigger": "site-b-tile2"},
            "annotations": {"sgs.io/trigger-group": group},
        },
        "spec": {"site": "site-b"},
        "status": {"phase": "Succeeded", "progress": "26/26"},
    }
    broken = {"metadata": {"name": "nir-x", "annotations": {"sgs.io/trigger-group": "not json"}}, "spec": {}}
    console = Console(record=True, width=200)
    console.print(runs_table([run, broken]))
    lines = console.export_text().splitlines()
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in lines if "│" in line}
    assert cells["nir-a91595e00a3d"] == ["site-b-tile2", "observation=2", "site-b", "Succeeded", "26/26"]
    assert cells["nir-x"] == ["-", "-", "-", "-", "-"]
