"""Where the Go-built binaries of the stack live: `~/.cache/sgs/bin/<name>-<version>/<name>`.

The pinned versions are read from the wrapper modules in `tools/*/go.mod`, the same files
`tools/build-binaries.sh` builds from, so the two can never disagree.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
BUILD_SCRIPT = TOOLS_DIR / "build-binaries.sh"

# binary name → (wrapper module directory under tools/, module whose version pins it)
_WRAPPERS: dict[str, tuple[str, str]] = {
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3"),
    "minio": ("minio", "github.com/minio/minio"),
    "kube-apiserver": ("kube", "k8s.io/kubernetes"),
    "kube-controller-manager": ("kube", "k8s.io/kubernetes"),
    "kube-scheduler": ("kube", "k8s.io/kubernetes"),
    "kubectl": ("kube", "k8s.io/kubernetes"),
    "jaeger": ("jaeger", "github.com/jaegertracing/jaeger"),
    "helm": ("helm", "helm.sh/helm/v3"),
}
BINARY_NAMES = tuple(_WRAPPERS)
BUILD_HINT = "build it with `sgs dev build` (tools/build-binaries.sh; the first build takes many minutes)"


def cache_root() -> Path:
    return Path(os.environ.get("SGS_CACHE", "~/.cache/sgs")).expanduser()


def pinned_version(name: str) -> str | None:
    """The version `tools/<wrapper>/go.mod` pins for `name`, or None outside a source checkout."""
    directory, module = _WRAPPERS[name]
    go_mod = TOOLS_DIR / directory / "go.mod"
    if not go_mod.is_file():
        return None
    for line in go_mod.read_text().splitlines():
        words = line.split()
        if words[:2] == ["require", module] and len(words) >= 3:
            return words[2]
        if words[:1] == [module] and len(words) >= 2 and words[1].startswith("v"):
            return words[1]
    return None


def binary_path(name: str) -> Path | None:
    """The binary to run: $SGS_<NAME>_BIN if set, else the cached build of the pinned version.

    Outside a checkout (no tools/), the newest cached build of that name is used.
    """
    override = os.environ.get(f"SGS_{name.upper().replace('-', '_')}_BIN")
    if override:
        return Path(override)
    version = pinned_version(name)
    if version is not None:
        candidate = cache_root() / "bin" / f"{name}-{version}" / name
        return candidate if candidate.is_file() else None
    builds = sorted((cache_root() / "bin").glob(f"{name}-*/{name}"), key=lambda p: p.stat().st_mtime)
    return builds[-1] if builds else None


def kubectl_path() -> Path | None:
    """kubectl of the pinned release if built, else whatever kubectl is on PATH."""
    built = binary_path("kubectl")
    if built is not None:
        return built
    found = shutil.which("kubectl")
    return Path(found) if found else None
