"""The Sites a service works with — stores with their credentials, labels, maintenance, archive endpoints.

One loader for both deployments: the input is always Site resources plus the Secrets they name, either read
from the cluster (:mod:`sgs.storage.site_watch`, LIST + WATCH) or from a **Sites file** on the embedded
default — a YAML file of the same manifests one would ``kubectl apply`` (``kind: Site`` and ``kind: Secret``
documents)::

    apiVersion: sgs.io/v1alpha1
    kind: Site
    metadata: {name: sdc-fr, labels: {tier: primary, country: FR}}
    spec:
      storage: {kind: s3, endpoint: 127.0.0.1:9000, bucket: sgs, secure: false, credentials: {name: sdc-fr-s3}}
      capacity: {cores: 64, storageTb: 10}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: sdc-fr-s3}
    stringData: {accessKey: ..., secretKey: ...}

:func:`resolve` turns the manifests into :class:`Sites`: each valid Site with its credentials, and for each
Site that cannot be used (bad spec, missing Secret or key) the reason — one broken Site never hides the others.
In a file, a relative POSIX ``storage.path`` is relative to the file's directory.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sgs.model.base import API_VERSION
from sgs.model.site import MaintenanceWindow, Site, StorageKind
from sgs.storage.base import Store
from sgs.storage.posix import PosixStore
from sgs.storage.s3 import S3Store

DEFAULT_NAMESPACE = "default"
JSON = dict[str, Any]


class SitesFileError(ValueError):
    """A Sites file cannot be read; the message names the file, the document and the reason."""


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class LoadedSite:
    """A Site resource and the credentials its storage needs (None for POSIX storage)."""

    resource: Site
    credentials: S3Credentials | None = None
    archive_token: str | None = field(default=None, repr=False)
    """This Site's archive token (``spec.archiveCredentials``), which registers replicas at the Site."""

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def labels(self) -> Mapping[str, str]:
        return self.resource.metadata.labels

    @property
    def archive_url(self) -> str | None:
        return self.resource.spec.archive_url

    def maintenance_at(self, moment: datetime) -> MaintenanceWindow | None:
        """The maintenance window ``moment`` falls in, if any."""
        return next((w for w in self.resource.spec.maintenance if w.start <= moment < w.end), None)

    def store(self, **options: Any) -> Store:
        """A store for this Site; ``options`` go to :class:`S3Store` (part size, connections, ...)."""
        storage = self.resource.spec.storage
        if storage.kind is StorageKind.POSIX:
            assert storage.path is not None  # the model requires it for POSIX
            return PosixStore(self.name, Path(storage.path))
        assert storage.endpoint is not None and storage.bucket is not None
        keys = self.credentials
        return S3Store.connect(
            self.name,
            storage.endpoint,
            storage.bucket,
            keys.access_key if keys else None,
            keys.secret_key if keys else None,
            secure=storage.secure,
            **options,
        )


@dataclass(frozen=True)
class Sites:
    """A snapshot: the usable Sites by name, and why each unusable one is not."""

    sites: dict[str, LoadedSite] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> LoadedSite:
        try:
            return self.sites[name]
        except KeyError:
            reason = self.errors.get(name, "no such Site")
            raise KeyError(f"Site {name}: {reason}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.sites

    def __len__(self) -> int:
        return len(self.sites)


def _secret_values(secret: JSON) -> dict[str, str]:
    """A Secret's values: ``stringData`` as written, ``data`` base64-decoded (as the API server stores them)."""
    values = {k: base64.b64decode(v, validate=True).decode() for k, v in (secret.get("data") or {}).items()}
    values.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return values


def _credentials(site: Site, secrets: Mapping[tuple[str, str], JSON]) -> S3Credentials | None:
    ref = site.spec.storage.credentials
    if site.spec.storage.kind is not StorageKind.S3 or ref is None:
        return None
    namespace = site.metadata.namespace or DEFAULT_NAMESPACE
    secret = secrets.get((namespace, ref.name))
    if secret is None:
        raise ValueError(f"spec.storage.credentials: Secret {namespace}/{ref.name} not found")
    try:
        values = _secret_values(secret)
    except (binascii.Error, UnicodeDecodeError, AttributeError):
        raise ValueError(f"spec.storage.credentials: Secret {namespace}/{ref.name} has undecodable data") from None
    missing = [key for key in (ref.access_key_key, ref.secret_key_key) if not values.get(key)]
    if missing:
        raise ValueError(f"spec.storage.credentials: Secret {namespace}/{ref.name} has no {', '.join(missing)}")
    return S3Credentials(values[ref.access_key_key], values[ref.secret_key_key])


def _archive_token(site: Site, secrets: Mapping[tuple[str, str], JSON]) -> str | None:
    ref = site.spec.archive_credentials
    if ref is None:
        return None
    namespace = site.metadata.namespace or DEFAULT_NAMESPACE
    secret = secrets.get((namespace, ref.name))
    if secret is None:
        raise ValueError(f"spec.archiveCredentials: Secret {namespace}/{ref.name} not found")
    try:
        token = _secret_values(secret).get(ref.key)
    except (binascii.Error, UnicodeDecodeError, AttributeError):
        raise ValueError(f"spec.archiveCredentials: Secret {namespace}/{ref.name} has undecodable data") from None
    if not token:
        raise ValueError(f"spec.archiveCredentials: Secret {namespace}/{ref.name} has no {ref.key}")
    return token


def _error_text(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _namespaced_name(obj: JSON) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or DEFAULT_NAMESPACE), str(metadata.get("name") or "")


def resolve(site_objects: Iterable[JSON], secrets: Iterable[JSON], base_dir: Path | None = None) -> Sites:
    """Sites from Site manifests and the Secrets (of any namespace) they may name.

    ``base_dir`` makes relative POSIX paths absolute (Sites files); the cluster gives absolute ones.
    """
    by_ref = {_namespaced_name(secret): secret for secret in secrets}
    loaded: dict[str, LoadedSite] = {}
    errors: dict[str, str] = {}
    for index, obj in enumerate(site_objects):
        name = str((obj.get("metadata") or {}).get("name") or f"#{index}")
        try:
            site = Site.model_validate(obj)
            storage = site.spec.storage
            if base_dir is not None and storage.kind is StorageKind.POSIX and storage.path:
                storage.path = str((base_dir / storage.path).resolve())
            if name in loaded:
                raise ValueError("metadata.name: another Site has the same name")
            loaded[name] = LoadedSite(site, _credentials(site, by_ref), _archive_token(site, by_ref))
        except ValidationError as error:
            errors[name] = _error_text(error)
        except ValueError as error:
            errors[name] = str(error)
    return Sites(loaded, errors)


def load_sites_file(path: Path) -> Sites:
    """The Sites of a Sites file (see the module docstring); SitesFileError if it is not one."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise SitesFileError(f"{path}: cannot read it as YAML: {error}") from None
    sites: list[JSON] = []
    secrets: list[JSON] = []
    for index, document in enumerate(documents):
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind == "Site" and document.get("apiVersion", API_VERSION) == API_VERSION:
            sites.append(document)
        elif kind == "Secret" and document.get("apiVersion", "v1") == "v1":
            secrets.append(document)
        else:
            raise SitesFileError(
                f"{path}: document {index}: expected kind Site ({API_VERSION}) or Secret (v1), got {kind!r}"
            )
    return resolve(sites, secrets, base_dir=path.parent.resolve())


class SiteStores:
    """One :class:`Store` per Site, shared by every copy (one connection pool each), kept in step with the Sites.

    :meth:`update` with each new snapshot (a :class:`~sgs.storage.site_watch.SitesWatch`'s ``on_change``): a Site
    whose storage or credentials changed gets a new store, one that went away is dropped. Thread-safe: workers
    look stores up from their threads while the watch updates them from the event loop.
    """

    def __init__(self, sites: Sites | None = None, **options: Any) -> None:
        self._options = options
        self._lock = threading.Lock()
        self._sites = Sites()
        self._stores: dict[str, tuple[LoadedSite, Store]] = {}
        if sites is not None:
            self.update(sites)

    def update(self, sites: Sites) -> None:
        with self._lock:
            kept = {
                name: (site, store)
                for name, (site, store) in self._stores.items()
                if name in sites.sites and _same_storage(sites.sites[name], site)
            }
            self._stores, self._sites = kept, sites

    def __getitem__(self, name: str) -> Store:
        with self._lock:
            if name in self._stores:
                return self._stores[name][1]
            site = self._sites[name]  # KeyError with the Site's problem, if it has one
            store = site.store(**self._options)
            self._stores[name] = (site, store)
            return store


def _same_storage(new: LoadedSite, old: LoadedSite) -> bool:
    return new.resource.spec.storage == old.resource.spec.storage and new.credentials == old.credentials
