"""What ``sgs task exec`` is told to do: the task's files at its Site's S3 store and where they go in its scratch.

The operator writes one manifest per task attempt (JSON, in the Job's ``SGS_TASK_MANIFEST`` variable or in a file
named by ``--manifest``)::

    {"site": "sdc-fr", "endpoint": "minio.sdc-fr:9000", "bucket": "sgs", "secure": true,
     "inputs": [{"key": "raw/3f/a2/3fa2....fits", "local": "in/images/0-3fa2....fits",
                 "checksums": {"size": 2880, "adler32": "0a6862d0", "sha256": "..."}}],
     "lists": [{"local": "in/images.json", "items": ["in/images/0-3fa2....fits"]}],
     "outputs": [{"local": "out/stack.fits", "key": "ns/run/stack/stack.fits"}]}

Every ``local`` is relative to the task's scratch directory (``$TMPDIR/sgs-task``): an absolute path, a ``..``
part or anything that is not a plain relative path is refused when the manifest is read, and each path is checked
again once resolved on disk (``Scratch.confine``), so a symlink the command leaves behind cannot make the wrapper
read or upload a file outside the scratch directory. Keys are checked with :func:`sgs.storage.check_key`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sgs.model.checksum import Checksums
from sgs.storage.errors import InvalidKeyError
from sgs.storage.layout import check_key

MANIFEST_ENV = "SGS_TASK_MANIFEST"
"""The variable holding the manifest's JSON."""
ACCESS_KEY_ENV = "SGS_S3_ACCESS_KEY"
SECRET_KEY_ENV = "SGS_S3_SECRET_KEY"
"""The Site's S3 keys (from its credentials Secret, by secretKeyRef): the wrapper's, never the command's."""
SCRATCH_DIR = "sgs-task"
"""The wrapper's directory under $TMPDIR: the command's own temporary files stay beside it."""
SCRATCH_REFERENCE = "$(SGS_SCRATCH)"
"""Written in the Job's argv and env for the scratch directory; the wrapper replaces it with the real path.

Not a variable of the pod: Kubernetes (and the bridge) leave ``$(NAME)`` of an unknown NAME as written, and the
directory TMPDIR names is only known where the task runs (the bridge moves volumes under the pod's directory).
"""
MAX_LOCAL_BYTES = 1024


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the field."""


class OutsideScratchError(ManifestError):
    """A path that resolves out of the scratch directory (a symlink the command made, a list naming /etc/...)."""


def _relative(value: str) -> str:
    """A plain relative path: no absolute path, no empty, ``.`` or ``..`` part, no NUL or backslash."""
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_LOCAL_BYTES:
        raise ValueError(f"longer than {MAX_LOCAL_BYTES} bytes")
    if value.startswith("/"):
        raise ValueError(f"{value!r} is absolute: local paths are relative to the task's scratch directory")
    if "\x00" in value or "\\" in value:
        raise ValueError(f"{value!r}: NUL and backslashes are not allowed")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"{value!r}: '..', '.' and empty parts are not allowed (it must stay in the scratch directory)"
        )
    return value


def _key(value: str) -> str:
    try:
        return check_key(value)
    except InvalidKeyError as err:
        raise ValueError(str(err)) from None


LocalPath = Annotated[str, AfterValidator(_relative)]
Key = Annotated[str, AfterValidator(_key)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskInput(_Model):
    """An object of the Site's store the command reads, downloaded (and verified) before it starts."""

    key: Key
    local: LocalPath
    checksums: Checksums | None = Field(
        default=None, description="What the object must hold; unset: the checksums sgs recorded with the object."
    )


class TaskList(_Model):
    """A list input: a JSON file of local paths (of downloaded inputs), written before the command starts; an item
    may itself be a list (a fan-in of several mapped outputs is a list of lists)."""

    local: LocalPath
    items: list[LocalPath | list[LocalPath]] = Field(max_length=100_000)


class TaskOutput(_Model):
    """A file the command writes, uploaded to ``key`` once it succeeded.

    With ``list``, the file is a JSON array of paths the command wrote (relative to the list's directory or
    absolute, within the scratch directory): each is uploaded under ``<key>.d/``, and the list is stored with
    their ``s3://`` URIs instead of the local paths.
    """

    local: LocalPath
    key: Key
    list: bool = False


class TaskManifest(_Model):
    site: str = Field(min_length=1, max_length=253)
    endpoint: str = Field(min_length=1, description="The Site's S3 endpoint, host:port or URL.")
    bucket: str = Field(min_length=3, max_length=63)
    secure: bool = True
    inputs: list[TaskInput] = Field(default_factory=list, max_length=100_000)
    lists: list[TaskList] = Field(default_factory=list, max_length=1_000)
    outputs: list[TaskOutput] = Field(default_factory=list, max_length=1_000)
    attempts: int = Field(default=5, ge=1, le=20, description="Tries of each download and upload.")
    backoff_s: float = Field(default=1.0, ge=0, le=60, description="First wait between tries; doubled each time.")

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        """Two files at one local path would overwrite each other (and an output would upload an input)."""
        seen: dict[str, str] = {}
        named = [(i.local, f"inputs[{n}]") for n, i in enumerate(self.inputs)]
        named += [(item.local, f"lists[{n}]") for n, item in enumerate(self.lists)]
        named += [(o.local, f"outputs[{n}]") for n, o in enumerate(self.outputs)]
        for local, where in named:
            if local in seen:
                raise ValueError(f"{where}.local: {local!r} is also {seen[local]}.local")
            seen[local] = where
        keys: dict[str, int] = {}
        for n, output in enumerate(self.outputs):
            if output.key in keys:
                raise ValueError(f"outputs[{n}].key: {output.key!r} is also outputs[{keys[output.key]}].key")
            keys[output.key] = n
        return self

    @classmethod
    def parse(cls, text: str, where: str) -> TaskManifest:
        """From JSON; ManifestError naming ``where`` and the field."""
        from pydantic import ValidationError

        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(manifest)'}: {e['msg']}" for e in err.errors()
            )
            raise ManifestError(f"{where}: {problems}") from None


class Scratch:
    """The task's scratch directory; every local path the wrapper touches is confined to it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))

    @classmethod
    def of_environment(cls, environ: dict[str, str] | os._Environ[str]) -> Scratch:
        tmpdir = environ.get("TMPDIR")
        if not tmpdir or not tmpdir.startswith("/"):
            raise ManifestError(f"TMPDIR: {tmpdir!r} is not an absolute path (the pod's scratch directory)")
        return cls(Path(tmpdir) / SCRATCH_DIR)

    def path(self, local: str, where: str) -> Path:
        """Where ``local`` (checked by the manifest) is, its parents made; refused if it resolves elsewhere."""
        _relative(local)
        target = self.root / PurePosixPath(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.confine(target, where, must_exist=False)
        return target

    def confine(self, path: Path, where: str, must_exist: bool = True) -> Path:
        """``path`` resolved (symlinks included) if it lies in the scratch directory; else ManifestError."""
        resolved = Path(os.path.realpath(path))
        if resolved != self.root and self.root not in resolved.parents:
            raise OutsideScratchError(
                f"{where}: {path} resolves to {resolved}, outside the scratch directory {self.root}"
            )
        if must_exist and not resolved.is_file():
            raise OutsideScratchError(f"{where}: {path} is not a regular file")
        return resolved

    def expand(self, text: str) -> str:
        return text.replace(SCRATCH_REFERENCE, str(self.root))
