"""Reproducible OCI images of the deployables, built without a container daemon (`sgs images build|list`)."""

from sgs.images.build import IMAGE_NAMES, BuiltImage, ImageBuilder, ImageBuildError, default_cache_dir
from sgs.images.dockerfile import DockerfileError, ImageConfig, read_config

__all__ = [
    "IMAGE_NAMES",
    "BuiltImage",
    "DockerfileError",
    "ImageBuildError",
    "ImageBuilder",
    "ImageConfig",
    "default_cache_dir",
    "read_config",
]
