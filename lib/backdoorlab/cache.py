"""A content-addressed cache for trained models and other tensor artifacts.

An artifact is a dict of named tensors plus a small JSON-serialisable ``info`` dict
(training metrics, timings). It is stored as one safetensors file whose name carries a key:
the SHA-256 of the recipe's name, its full configuration and the source code of everything
that builds it. Changing any of the three changes the key, so a stale artifact is never
served. Files are written atomically and carry a checksum of their tensors; a file that
fails to load or to verify is reported, removed and rebuilt. Nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "Artifact",
    "ArtifactCache",
    "CorruptArtifactWarning",
    "cache_key",
    "cache_root",
]

_FORMAT = "backdoorlab-artifact-1"


class CorruptArtifactWarning(UserWarning):
    """A cached file could not be read or failed its checksum and will be rebuilt."""


@dataclass(frozen=True, eq=False)
class Artifact:
    """Named tensors and JSON-serialisable information about them.

    Attributes
    ----------
    tensors : dict of str to torch.Tensor
        For a model, its ``state_dict()``.
    info : dict
        Anything JSON can hold: metrics, timings, the configuration.
    """

    tensors: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def cache_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The artifact folder: ``root``, else ``$BACKDOORLAB_CACHE``, else ``~/.cache/backdoorlab/artifacts``."""
    if root is not None:
        return Path(root).expanduser()
    from_env = os.environ.get("BACKDOORLAB_CACHE")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "backdoorlab" / "artifacts"


def _canonical_json(value: Any, *, name: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be JSON-serialisable (str, int, float, bool, None, list, dict): {error}") from None


def _source(obj: object) -> str:
    if isinstance(obj, functools.partial):
        obj = obj.func
    elif callable(obj) and not (inspect.isroutine(obj) or inspect.isclass(obj)):
        obj = type(obj)  # a callable instance: its class holds the code
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError) as error:
        raise TypeError(f"cannot read the source code of {obj!r} for the cache key: {error}") from None


def cache_key(name: str, config: Mapping[str, Any], *, sources: Sequence[object]) -> str:
    """The key of an artifact: SHA-256 over its name, configuration and builder source.

    Parameters
    ----------
    name : str
        The recipe's name.
    config : mapping
        Its full configuration, JSON-serialisable; key order does not matter.
    sources : sequence of functions, classes or modules
        Everything whose code determines the artifact; their source text is hashed.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> def build():
    ...     return 1
    >>> a = cache_key("demo", {"epochs": 3, "seed": 0}, sources=[build])
    >>> a == cache_key("demo", {"seed": 0, "epochs": 3}, sources=[build])
    True
    >>> a == cache_key("demo", {"seed": 1, "epochs": 3}, sources=[build])
    False
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    payload = {
        "format": _FORMAT,
        "name": name,
        "config": json.loads(_canonical_json(dict(config), name="config")),
        "sources": [_source(obj) for obj in sources],
    }
    return hashlib.sha256(_canonical_json(payload, name="key payload").encode()).hexdigest()


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ArtifactCache:
    """Artifacts on disk under ``root`` (see :func:`cache_root`), one safetensors file each.

    Examples
    --------
    >>> import tempfile
    >>> cache = ArtifactCache(tempfile.mkdtemp())
    >>> def build():
    ...     return Artifact({"w": torch.ones(2)}, {"loss": 0.5})
    >>> first = cache.get_or_build("demo", {"seed": 0}, build)
    >>> again = cache.get_or_build("demo", {"seed": 0}, build)  # read from disk
    >>> again.info, again.tensors["w"].tolist()
    ({'loss': 0.5}, [1.0, 1.0])
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_root(root)

    def path(self, name: str, key: str) -> Path:
        """Where the artifact ``name`` with ``key`` lives."""
        return self.root / f"{name}-{key[:24]}.safetensors"

    def load(self, name: str, key: str) -> Artifact | None:
        """The stored artifact, or None if absent or corrupt (a corrupt file is removed)."""
        path = self.path(name, key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            if metadata.get("key") != key:
                raise ValueError("its stored key does not match")
            if metadata.get("sha256") != _checksum(tensors):
                raise ValueError("its checksum does not match its tensors")
            info = json.loads(metadata["info"])
        except Exception as error:  # safetensors raises its own error types
            warnings.warn(
                f"cached artifact {path} is corrupt ({error}); it will be rebuilt",
                CorruptArtifactWarning,
                stacklevel=3,
            )
            path.unlink(missing_ok=True)
            return None
        return Artifact(tensors, info)

    def save(self, name: str, key: str, artifact: Artifact) -> Path:
        """Write ``artifact`` atomically: to a temporary file first, then rename."""
        tensors = {k: v.detach().contiguous().clone() for k, v in artifact.tensors.items()}
        metadata = {
            "format": _FORMAT,
            "name": name,
            "key": key,
            "sha256": _checksum(tensors),
            "info": _canonical_json(artifact.info, name="info"),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(name, key)
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata=metadata)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def get_or_build(
        self,
        name: str,
        config: Mapping[str, Any],
        build: Callable[[], Artifact],
        *,
        sources: Sequence[object] = (),
    ) -> Artifact:
        """Load the artifact for (``name``, ``config``, source of ``build`` and ``sources``), or build and store it.

        Parameters
        ----------
        name : str
            The recipe's name (part of the file name and of the key).
        config : mapping
            The full configuration, JSON-serialisable.
        build : callable
            Returns the :class:`Artifact`; called only on a miss.
        sources : sequence
            Further functions, classes or modules whose code determines the artifact.
        """
        key = cache_key(name, config, sources=[build, *sources])
        found = self.load(name, key)
        if found is not None:
            return found
        artifact = build()
        if not isinstance(artifact, Artifact):
            raise TypeError(f"build must return an Artifact, got {type(artifact).__name__}")
        self.save(name, key, artifact)
        return artifact
