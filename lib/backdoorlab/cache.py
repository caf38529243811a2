"""A content-addressed cache for trained models and other tensor artifacts.

An artifact is a dict of named tensors plus a small JSON-serialisable ``info`` dict
(training metrics, timings). It is stored as one safetensors file whose name carries a key:
the SHA-256 of the recipe's name, its full configuration and the source code of everything
that builds it. Changing any of the three changes the key, so a stale artifact is never
served. Files are written atomically, readable by everyone (mode 0644, so a cache folder can be
shared), and carry a checksum of their tensors and their ``info``; a file that fails to load or
to verify is reported, removed and rebuilt. A file the cache may not read is reported as such
and left alone; a folder it may not write to gives a warning and the built artifact, uncached.
Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
import os
import re
import struct
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

__all__ = [
    "Artifact",
    "ArtifactCache",
    "CachePermissionWarning",
    "CorruptArtifactWarning",
    "cache_key",
    "cache_root",
    "tensor_digest",
]

_FORMAT = "backdoorlab-artifact-2"
#: Artifact names: plain file-name stems, so a name can never point outside the cache folder.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_KEY = re.compile(r"[A-Za-z0-9]{24,128}")
#: A temporary file older than this was left by a killed writer (a live write takes seconds).
STALE_SECONDS = 3600.0
_WARNED_UNWRITABLE: set[str] = set()


class CorruptArtifactWarning(UserWarning):
    """A cached file could not be parsed or failed its checksum and will be rebuilt."""


class CachePermissionWarning(UserWarning):
    """The cache may not read a file or write to its folder; the artifact is built without it."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"name must be a plain file-name stem (letters, digits, '_', '-', '.', no '..', "
            f"no '/', at most 100 characters), got {name!r}"
        )
    return name


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"key must be a string of 24 to 128 letters or digits (see cache_key), got {key!r}")
    return key


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
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
        return Path(root).expanduser()
    from_env = os.environ.get("BACKDOORLAB_CACHE")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "backdoorlab" / "artifacts"


def _check_json(value: Any, *, name: str, allow_nan: bool) -> None:
    """Refuse what JSON would not give back unchanged in kind: non-str keys, other types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} must have str keys only (JSON turns {key!r} into {str(key)!r}), got {key!r}")
            _check_json(item, name=f"{name}[{key!r}]", allow_nan=allow_nan)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, name=f"{name}[{index}]", allow_nan=allow_nan)
    elif isinstance(value, float):
        if not allow_nan and not math.isfinite(value):
            raise TypeError(f"{name} must be a finite number (JSON has no NaN or infinity), got {value!r}")
    elif not (value is None or isinstance(value, (str, int, bool))):
        raise TypeError(
            f"{name} must be JSON-serialisable (str, int, float, bool, None, list, dict), "
            f"got {type(value).__name__}"
        )


def _canonical_json(value: Any, *, name: str, allow_nan: bool = False) -> str:
    _check_json(value, name=name, allow_nan=allow_nan)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)


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
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    payload = {
        "format": _FORMAT,
        "name": name,
        "config": json.loads(_canonical_json(dict(config), name="config")),
        "sources": [_source(obj) for obj in sources],
    }
    return hashlib.sha256(_canonical_json(payload, name="key payload").encode()).hexdigest()


def _update(digest: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()  # .numpy() needs a CPU tensor
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the dtypes, shapes and bytes of ``tensors``, in order (on any device).

    A cache key that depends on data includes this digest of the data actually used: two
    datasets of the same size but different content get different keys.

    Examples
    --------
    >>> tensor_digest(torch.zeros(3)) == tensor_digest(torch.zeros(3))
    True
    >>> tensor_digest(torch.zeros(3)) == tensor_digest(torch.ones(3))
    False
    """
    digest = hashlib.sha256()
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensors[{index}] must be a torch.Tensor, got {type(tensor).__name__}")
        _update(digest, tensor)
    return digest.hexdigest()


def _checksum(tensors: Mapping[str, torch.Tensor], info_json: str = "") -> str:
    """SHA-256 over the named tensors and the stored ``info`` text."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(f"{key}|".encode())
        _update(digest, tensors[key])
    digest.update(b"info|" + info_json.encode())
    return digest.hexdigest()


def _read_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in memory (its JSON header)."""
    if len(blob) < 8:
        raise ValueError("it is shorter than a safetensors header")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise ValueError("its header length exceeds the file")
    header = json.loads(blob[8:8 + size])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("it has no metadata")
    return metadata


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
        """Where the artifact ``name`` with ``key`` lives (always inside ``root``)."""
        return self.root / f"{_check_name(name)}-{_check_key(key)[:24]}.safetensors"

    def load(self, name: str, key: str) -> Artifact | None:
        """The stored artifact, or None if absent, unreadable or corrupt (a corrupt file is removed).

        A file the cache may not read (another user's, say) is reported with a
        :class:`CachePermissionWarning` and left in place; a file that fails to parse or to
        verify is reported with a :class:`CorruptArtifactWarning` and removed.
        """
        path = self.path(name, key)
        if not path.exists():
            return None
        try:
            with open(path, "rb") as handle:
                blob = handle.read()
        except PermissionError as error:
            warnings.warn(
                f"cached artifact {path} cannot be read ({error}); it is built again without the cache "
                f"and the file is left alone (check the permissions of the cache folder {self.root})",
                CachePermissionWarning,
                stacklevel=3,
            )
            return None
        try:
            metadata = _read_metadata(blob)
            tensors = load_tensors(blob)
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"its format {metadata.get('format')!r} is not {_FORMAT!r}")
            if metadata.get("key") != key:
                raise ValueError("its stored key does not match")
            if metadata.get("sha256") != _checksum(tensors, metadata.get("info", "")):
                raise ValueError("its checksum does not match its tensors and info")
            info = json.loads(metadata["info"])
        except Exception as error:  # safetensors raises its own error types
            warnings.warn(
                f"cached artifact {path} is corrupt ({error}); it will be rebuilt",
                CorruptArtifactWarning,
                stacklevel=3,
            )
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        return Artifact(tensors, info)

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files that killed writers left behind (older than STALE_SECONDS)."""
        now = time.time()
        for temporary in self.root.glob(".*.safetensors.*.tmp"):
            with contextlib.suppress(OSError):
                if now - temporary.stat().st_mtime > STALE_SECONDS:
                    temporary.unlink()

    def save(self, name: str, key: str, artifact: Artifact) -> Path:
        """Write ``artifact`` atomically: to a temporary file first, then rename; mode 0644.

        Raises
        ------
        TypeError
            If ``artifact.info`` is not JSON-serialisable with str keys (NaN and infinity are
            kept: Python's JSON reads them back).
        OSError
            If the folder cannot be written (nothing partial is left behind).
        """
        path = self.path(name, key)
        if not isinstance(artifact, Artifact):
            raise TypeError(f"artifact must be an Artifact, got {type(artifact).__name__}")
        info_json = _canonical_json(artifact.info, name="info", allow_nan=True)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in artifact.tensors.items()}
        metadata = {
            "format": _FORMAT,
            "name": name,
            "key": key,
            "sha256": _checksum(tensors, info_json),
            "info": info_json,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata=metadata)
            os.chmod(temporary, 0o644)  # mkstemp makes 0600: others sharing the folder could not read it
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
            The recipe's name (part of the file name and of the key): letters, digits, ``_``,
            ``-`` and ``.``, never a path.
        config : mapping
            The full configuration, JSON-serialisable with str keys (checked before building).
        build : callable
            Returns the :class:`Artifact`; called only on a miss.
        sources : sequence
            Further functions, classes or modules whose code determines the artifact.

        Returns
        -------
        Artifact
            Its ``info`` is what JSON gives back (tuples become lists) on a hit and a miss alike.
            If the cache folder cannot be written, a :class:`CachePermissionWarning` is given
            once per folder and the built artifact is returned uncached.
        """
        _check_name(name)
        if not callable(build):
            raise TypeError(f"build must be callable, got {type(build).__name__}")
        key = cache_key(name, config, sources=[build, *sources])
        found = self.load(name, key)
        if found is not None:
            return found
        artifact = build()
        if not isinstance(artifact, Artifact):
            raise TypeError(f"build must return an Artifact, got {type(artifact).__name__}")
        info = json.loads(_canonical_json(artifact.info, name="info", allow_nan=True))
        artifact = Artifact(artifact.tensors, info)
        if self.path(name, key).exists():  # a file load() could not read: not ours to replace
            return artifact
        try:
            self.save(name, key, artifact)
        except OSError as error:
            if str(self.root) not in _WARNED_UNWRITABLE:
                _WARNED_UNWRITABLE.add(str(self.root))
                warnings.warn(
                    f"the artifact cache folder {self.root} cannot be written ({error}); "
                    f"artifacts are built and returned without being cached "
                    f"(set BACKDOORLAB_CACHE to a writable folder)",
                    CachePermissionWarning,
                    stacklevel=2,
                )
        return artifact
