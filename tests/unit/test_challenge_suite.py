"""The pure parts of `sgs challenge`: the suite's Pipelines, the verdicts, the table, the exit code, and the
Dummy Pipeline's programs run here as the Site runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sgs.challenge import tasks
from sgs.challenge.suite import Row, Status, checks, exit_code, fanout_pipeline, render, run_row, run_seconds


def test_every_check_with_a_run_has_a_valid_pipeline_and_the_fanout_registers_only_its_summary() -> None:
    suite = checks("/usr/bin/python3")
    assert [c.key for c in suite][:2] == ["fanout", "tmpdir"]
    assert {c.key for c in suite if c.pipeline is not None} == {"fanout", "retry", "dynamic", "oom", "gpu"}
    spec = fanout_pipeline("/usr/bin/python3", runtimes=(0.1, 0.2))
    registered = [(e.name, o.name) for e in spec.executables for o in e.outputs if o.register_dataset]
    assert registered == [("gather", "summary")]
    assert all(e.command.startswith("/usr/bin/python3 -m sgs.challenge.tasks ") for e in spec.executables)


def test_a_run_row_passes_only_when_succeeded_and_names_the_failed_task() -> None:
    ok = {
        "metadata": {},
        "status": {
            "phase": "Succeeded",
            "progress": "6/6",
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:00:12Z",
        },
    }
    assert run_row("fan", ok) == Row("fan", Status.PASS, 12.0, "6/6 tasks")
    failed = {"status": {"phase": "Failed", "failedTasks": [{"task": "hungry", "reason": "OOMKilled", "message": "x"}]}}
    row = run_row("oom", failed)
    assert row.status is Status.FAIL and "hungry: OOMKilled" in row.detail
    pending = {
        "status": {"phase": "Pending", "conditions": [{"type": "SiteReady", "status": "False", "reason": "NoNodes"}]}
    }
    assert "timed out in phase Pending: SiteReady NoNodes" in run_row("x", pending, timed_out=True).detail
    assert run_row("x", None).detail == "Run not created"
    assert run_seconds({"status": {}}) is None


def test_skipped_rows_do_not_fail_the_challenge_and_the_table_names_the_failures() -> None:
    rows = [Row("a", Status.PASS, 1.0), Row("gpu", Status.SKIP, None, "no GPU")]
    assert exit_code(rows) == 0 and render(rows).endswith("all features passed")
    rows.append(Row("lineage", Status.FAIL, None, "no archive"))
    assert exit_code(rows) == 1
    table = render(rows)
    assert "FAILED: lineage" in table and "skipped" in table and "   1.0s" in table


def _call(*argv: str) -> int:
    return tasks.main(list(argv))


def test_the_fanout_programs_split_work_and_gather(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tmp_path / "split" / "items.json"
    assert _call("split", "--runtimes=0,0", f"--items={items}") == 0
    names = json.loads(items.read_text())
    results = []
    for index, name in enumerate(names):
        tmp = tmp_path / f"tmp{index}"
        tmp.mkdir()
        monkeypatch.setenv("TMPDIR", str(tmp))
        result = tmp_path / f"r{index}.json"
        assert _call("work", f"--item={items.parent / name}", f"--result={result}") == 0
        results.append(str(result))
    listing = tmp_path / "results.json"
    listing.write_text(json.dumps(results))
    assert _call("gather", f"--results={listing}", "--expected=2", f"--summary={tmp_path / 's.json'}") == 0
    assert _call("gather", f"--results={listing}", "--expected=3", f"--summary={tmp_path / 's.json'}") == 1


def test_work_refuses_a_shared_or_used_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"index": 0, "seconds": 0}))
    monkeypatch.setenv("TMPDIR", "/tmp")
    assert _call("work", f"--item={item}", f"--result={tmp_path / 'r.json'}") == 1
    assert "shared temporary directory" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "left").write_text("")
    monkeypatch.setenv("TMPDIR", str(used))
    assert _call("work", f"--item={item}", f"--result={tmp_path / 'r.json'}") == 1
    assert "not empty" in capsys.readouterr().err


def test_flaky_fails_its_first_attempt_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGS_ATTEMPT", raising=False)
    assert _call("flaky", f"--result={tmp_path / 'r.json'}") == 1
    monkeypatch.setenv("SGS_ATTEMPT", "0")
    with pytest.raises(SystemExit) as first:
        _call("flaky", f"--result={tmp_path / 'r.json'}")
    assert first.value.code == 3
    monkeypatch.setenv("SGS_ATTEMPT", "1")
    assert _call("flaky", f"--result={tmp_path / 'r.json'}") == 0


def test_gpu_needs_a_visible_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    assert _call("gpu", f"--result={tmp_path / 'r.json'}") == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert _call("gpu", f"--result={tmp_path / 'r.json'}") == 0
    assert _call("nonsense") == 2
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_trigger_pipeline_fires_only_on_its_own_observation_and_its_task_needs_an_arrival(tmp_path: Path) -> None:
    from sgs.challenge.suite import trigger_pipeline

    [trigger] = trigger_pipeline("/usr/bin/python3", 1_234_567_890).triggers
    assert trigger.where == "instrument = 'SGS-CHALLENGE' AND observation = 1234567890"
    assert trigger.complete.count == 1 and trigger.input == "arrivals"
    listing = tmp_path / "arrivals.json"
    listing.write_text("[]")
    assert _call("arrived", f"--arrivals={listing}", f"--result={tmp_path / 'r.json'}") == 1
    (tmp_path / "a.json").write_text("{}")
    listing.write_text(json.dumps([str(tmp_path / "a.json")]))
    assert _call("arrived", f"--arrivals={listing}", f"--result={tmp_path / 'r.json'}") == 0


def test_the_reproduce_pipeline_registers_both_compared_products_and_its_task_is_deterministic(tmp_path: Path) -> None:
    from sgs.challenge.suite import COMPARED, field_input, reproduce_pipeline

    spec = reproduce_pipeline("/usr/bin/python3")
    registered = {o.name: o.dataset_type for e in spec.executables for o in e.outputs if o.register_dataset}
    assert set(registered.values()) == set(COMPARED)
    assert spec.digest() == reproduce_pipeline("/usr/bin/python3").digest()
    assert field_input(7) == field_input(7) != field_input(8)
    assert field_input(7) != field_input(7, 1e-12)
    outputs = []
    for run, data in enumerate((field_input(7), field_input(7), field_input(7, 1e-12))):
        field = tmp_path / f"field{run}.json"
        field.write_bytes(data)
        cat, stats = tmp_path / f"c{run}.json", tmp_path / f"s{run}.json"
        argv = ("reproduce", f"--field={field}", "--zeropoint=25", f"--catalogue={cat}", f"--statistics={stats}")
        assert _call(*argv) == 0
        outputs.append((cat.read_bytes(), json.loads(stats.read_text())))
    assert outputs[0] == outputs[1]  # the same input, the same bytes
    assert outputs[0][0] != outputs[2][0] and outputs[0][1]["sources"] == 200


def test_numbers_are_compared_within_the_tolerance_and_anything_else_exactly() -> None:
    from sgs.challenge.suite import numbers_differ

    assert numbers_differ({"a": [1.0, 2.0], "n": 3}, {"a": [1.0 + 1e-12, 2.0], "n": 3}, 1e-9) is None
    found = numbers_differ({"a": [1.0, 2.0]}, {"a": [1.0, 2.1]}, 1e-9)
    assert found is not None and found.startswith(".a[1]: 2.0 vs 2.1 (relative 4.8e-02 > 1e-09)")
    assert numbers_differ({"a": 1}, {"b": 1}, 1e-9) == ".: keys ['a', 'b'] in one only"
    assert numbers_differ([1], [1, 2], 1e-9) == ".: 1 vs 2 items"
    assert numbers_differ({"s": "x"}, {"s": "y"}, 1e-9) == ".s: 'x' vs 'y'"
    assert numbers_differ(True, 1, 1e-9) == ".: True vs 1"
    assert numbers_differ(0.0, 0.0, 1e-9) is None


def test_replication_is_skipped_with_its_reason_without_a_transfer_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from sgs.challenge.runner import _start_replication
    from sgs.demo.stack import StackTarget

    for name in ("SGS_TRANSFER_URL", "SGS_TRANSFER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    target = StackTarget("kubeconfig", "http://archive", "token", (), {}, None)
    site = {"metadata": {"name": "site-a"}, "spec": {"archiveUrl": "http://archive", "storage": {"kind": "s3"}}}
    row = _start_replication(target, site, "sgs-challenge-x", None)
    assert isinstance(row, Row) and row.status is Status.SKIP and "no transfer service" in row.detail
    monkeypatch.setenv("SGS_TRANSFER_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("SGS_TRANSFER_TOKEN", "t")
    row = _start_replication(target, site, "sgs-challenge-x", None)
    assert isinstance(row, Row) and row.status is Status.SKIP and "not reachable" in row.detail
