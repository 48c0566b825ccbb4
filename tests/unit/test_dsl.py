"""The DSL compiles Euclid pipeline scripts unchanged and reports mistakes at the line that made them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sgs.dsl import ComputingResources, DslError, Executable, Input, Output, RetryPolicy, parallel, pipeline
from sgs.dsl.load import dump_manifest, load_pipeline, read_manifest
from sgs.model.pipeline import Pipeline
from sgs.planner import Planner

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NIR_SEED = "sgs.nir.pipeline:nir_pipeline"  # the seed-000 text, unchanged but for its imports
PARALLEL_SPLIT = f"{ROOT / 'examples' / 'parallel_split' / 'parallel_split.py'}:parallel_split"

split = Executable(command="split", inputs=[Input("images")], outputs=[Output("items")])
work = Executable(
    command="work",
    inputs=[Input("image"), Input("params", optional=True)],
    outputs=[Output("result"), Output("log", lineage=["image"])],
    resources=ComputingResources(cores=2, ram=3.0, walltime=0.5, gpus=1, tmpdir=10.0),
    retry=RetryPolicy(max=3, memory_multiplier=1.5),
)
combine = Executable(command="combine", inputs=[Input("inputlist")], outputs=[Output("combined")])


def test_nir_seed_compiles_into_four_parallel_calibration_branches_and_six_outputs() -> None:
    spec = load_pipeline(NIR_SEED).spec
    assert [o.name for o in spec.outputs] == [
        "calDither1",
        "calDither2",
        "calDither3",
        "calDither4",
        "stackedImage",
        "sourceCatalog",
    ]
    branches = {s.name.split(".")[0] for s in spec.steps if s.name.startswith("calibrateDither")}
    assert branches == {f"calibrateDither_{i}" for i in range(1, 5)}
    planner = Planner(spec, "r", {p.name: f"/in/{p.name}" for p in spec.inputs})
    first_wave = planner.take(0.0)
    assert sorted(t.id for t in first_wave) == [f"calibrateDither_{i}.runInitialize" for i in range(1, 5)]
    assert len(spec.steps) == 4 * 5 + 5


def test_branches_are_independent_until_astrometry() -> None:
    spec = load_pipeline(NIR_SEED).spec
    astrom = next(s for s in spec.steps if s.name == "doAstrom")
    sources = {b.step for b in astrom.inputs.values() if b.step}
    assert sources == {f"calibrateDither_{i}.backSubtract" for i in range(1, 5)}
    assert astrom.inputs["refcat_xml"].input == "catalog"


def test_parallel_split_fans_out_and_back_in() -> None:
    spec = load_pipeline(PARALLEL_SPLIT).spec
    correct = next(s for s in spec.steps if s.name == "correct")
    assert correct.map is not None and correct.map.over == "image"
    assert [o.name for o in correct.map.outputs] == [
        "image_flat_corr",
        "dark_corr_quality",
        "flat_corr_quality",
    ]
    body = [s.name for s in spec.steps if s.scope == "correct"]
    assert body == ["correct.ialtest_correct_dark", "correct.ialtest_correct_flat"]
    combine_step = next(s for s in spec.steps if s.name == "ialtest_combine_images")
    items = combine_step.inputs["inputlist"].items
    assert items is not None and [(r.step, r.output) for r in items] == [
        ("correct", "image_flat_corr"),
        ("correct", "dark_corr_quality"),
        ("correct", "flat_corr_quality"),
    ]


@pytest.mark.parametrize("reference", [NIR_SEED, PARALLEL_SPLIT])
def test_manifest_round_trips_byte_identically(reference: str, tmp_path: Path) -> None:
    text = dump_manifest(load_pipeline(reference))
    path = tmp_path / "p.yaml"
    path.write_text(text)
    again = read_manifest(path)
    assert dump_manifest(again) == text
    graph = Planner(again.spec, "r", {p.name: "x" for p in again.spec.inputs})
    assert dump_manifest(Pipeline(metadata=again.metadata, spec=graph.spec)) == text


def test_extensions_reach_the_manifest() -> None:
    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return work(image=split(images=images), params=3)[0]

    spec = p.spec()
    exe = spec.executable("work")
    assert exe.resources.gpus == 1 and exe.resources.tmpdir == 10.0
    assert exe.retry is not None and exe.retry.memory_multiplier == 1.5
    assert exe.outputs[1].lineage == ["image"]
    assert spec.steps[1].inputs["params"].value == "3"


def _error(fn: object) -> DslError:
    with pytest.raises(DslError) as info:
        fn.spec()  # type: ignore[attr-defined]
    return info.value


def test_unknown_input_name_is_reported_at_its_line() -> None:
    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return split(imagez=images)

    err = _error(p)
    assert "no input 'imagez'" in str(err)
    assert err.location is not None and err.location.startswith(__file__)
    line = int(err.location.rsplit(":", 1)[1])
    assert "imagez" in Path(__file__).read_text().splitlines()[line - 1]


def test_too_many_positional_arguments() -> None:
    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return split(images, images)

    assert "takes 1 input(s)" in str(_error(p))


def test_missing_required_input() -> None:
    @pipeline(outputs=("a",))
    def p(images):  # type: ignore[no-untyped-def]
        return work(params=images)[0]

    assert "missing required input(s) ['image']" in str(_error(p))


def test_unused_pipeline_input() -> None:
    @pipeline(outputs=("out",))
    def p(images, forgotten):  # type: ignore[no-untyped-def]
        return split(images=images)

    assert "['forgotten'] are never used" in str(_error(p))


def test_wrong_number_of_outputs() -> None:
    @pipeline(outputs=("a", "b"))
    def p(images):  # type: ignore[no-untyped-def]
        return split(images=images)

    assert "declares 2 output(s)" in str(_error(p))


def test_non_serialisable_argument() -> None:
    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return work(image=split(images=images), params=object())[0]

    assert "cannot be serialised" in str(_error(p))


def test_duplicate_executable_names() -> None:
    other = Executable(command="split", inputs=[Input("x")], outputs=[Output("items")])

    @pipeline(outputs=("a", "b"))
    def p(images):  # type: ignore[no-untyped-def]
        return split(images=images), other(x=images)

    # Two different executables resolve to the same name only through an explicit name or command.
    split_named = Executable(command="a", inputs=[Input("images")], outputs=[Output("y")], name="same")
    other_named = Executable(command="b", inputs=[Input("x")], outputs=[Output("y")], name="same")

    @pipeline(outputs=("a", "b"))
    def q(images):  # type: ignore[no-untyped-def]
        return split_named(images=images), other_named(x=images)

    assert p.spec()  # bound to different variable names: no clash
    assert "two different executables are both named 'same'" in str(_error(q))


def test_parallel_value_used_outside_its_body_is_an_error() -> None:
    leaked = []

    @parallel(iterable="image")
    def body(image):  # type: ignore[no-untyped-def]
        result = work(image=image)
        leaked.append(result[0])
        return result[0]

    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        body(image=split(images=images))
        return combine(inputlist=leaked[0])

    assert "inside a @parallel body is used outside it" in str(_error(p))


def test_calling_an_executable_outside_a_pipeline() -> None:
    with pytest.raises(DslError, match="outside a @pipeline"):
        split(images="x")


def test_cycle_in_a_manifest_is_rejected(tmp_path: Path) -> None:
    manifest = textwrap.dedent(
        """
        apiVersion: sgs.io/v1alpha1
        kind: Pipeline
        metadata: {name: loop}
        spec:
          inputs: [{name: x}]
          executables:
          - {name: e, command: e, inputs: [{name: i}], outputs: [{name: o}]}
          steps:
          - {name: a, executable: e, inputs: {i: {step: b, output: o}}}
          - {name: b, executable: e, inputs: {i: {step: a, output: o}}}
          outputs: [{name: r, from: {step: b, output: o}}]
        """
    )
    path = tmp_path / "loop.yaml"
    path.write_text(manifest)
    with pytest.raises(ValueError, match="cycle a -> b -> a"):
        read_manifest(path)


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: sgs.io/v1alpha1
            kind: Pipeline
            metadata: {name: bad}
            spec:
              inputs: [{name: x}]
              executables:
              - {name: e, command: e, inputs: [{name: i}], outputs: [{name: o}], resources: {cores: 0}}
              steps:
              - {name: a, executable: e, inputs: {i: {input: y}}}
            """
        )
    )
    with pytest.raises(ValueError) as info:
        read_manifest(path)
    text = str(info.value)
    assert "resources.cores" in text and "greater than or equal to 1" in text


def test_a_dynamic_function_is_written_as_its_entry_point_name(tmp_path: Path) -> None:
    from sgs.dynamic.builtin import fits_header

    sized = Executable(
        command="sized",
        inputs=[Input("image")],
        outputs=[Output("out")],
        resources=ComputingResources(dynamic=("image", fits_header)),
    )

    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return sized(image=split(images=images))

    from sgs.local.executor import as_pipeline

    text = dump_manifest(as_pipeline(p))
    assert "function: fits-header" in text
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert dump_manifest(read_manifest(path)) == text


def test_a_function_that_is_not_an_installed_entry_point_cannot_be_named() -> None:
    import os

    with pytest.raises(DslError, match=r"posix:system is not an entry point of group 'sgs.dynamic_resources'"):
        ComputingResources(dynamic=("payload", os.system)).to_model()  # type: ignore[arg-type]  # the exploit
    with pytest.raises(DslError, match=r"'posix:system' is a module:qualname"):
        ComputingResources(dynamic=("payload", "posix:system")).to_model()


def test_a_manifest_naming_code_as_a_dynamic_function_is_rejected_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "exploit.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: sgs.io/v1alpha1
            kind: Pipeline
            metadata: {name: exploit}
            spec:
              executables:
              - {name: e, command: e, inputs: [{name: i}], outputs: [{name: o}],
                 resources: {dynamic: {input: i, function: "posix:system"}}}
              steps:
              - {name: a, executable: e, inputs: {i: {value: x}}}
            """
        )
    )
    with pytest.raises(ValueError) as info:
        read_manifest(path)
    assert "resources.dynamic.function" in str(info.value) and "module:qualname" in str(info.value)


def test_the_digest_does_not_depend_on_the_order_of_keys() -> None:
    spec = load_pipeline(PARALLEL_SPLIT).spec
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)

    def reverse(value: object) -> object:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(value.items())}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    assert type(spec).model_validate(reverse(wire)).digest() == spec.digest()
    edited = wire | {"source": "elsewhere"}
    assert type(spec).model_validate(edited).digest() != spec.digest()
