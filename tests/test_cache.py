"""Tests of backdoorlab.cache: keys, atomic writes, corruption, no unpickling."""

from __future__ import annotations

import pickle

import pytest
import torch

from backdoorlab import cache as cache_module
from backdoorlab.cache import Artifact, ArtifactCache, CorruptArtifactWarning, cache_key


def build_a():
    return Artifact({"w": torch.arange(6, dtype=torch.float32).view(2, 3)}, {"loss": 0.25})


def build_b():
    return Artifact({"w": torch.arange(6, dtype=torch.float32).view(2, 3) * 2}, {"loss": 0.25})


class Counter:
    def __init__(self, build):
        self.build, self.calls = build, 0

    def __call__(self):
        self.calls += 1
        return self.build()


def get(store, counter, config=None):
    return store.get_or_build("demo", config or {"seed": 0}, counter, sources=[counter.build])


def test_key_covers_name_config_and_source():
    base = cache_key("demo", {"seed": 0, "lr": 0.1}, sources=[build_a])
    assert base == cache_key("demo", {"lr": 0.1, "seed": 0}, sources=[build_a])
    assert base != cache_key("demo", {"seed": 1, "lr": 0.1}, sources=[build_a])
    assert base != cache_key("other", {"seed": 0, "lr": 0.1}, sources=[build_a])
    assert base != cache_key("demo", {"seed": 0, "lr": 0.1}, sources=[build_b])
    assert base != cache_key("demo", {"seed": 0, "lr": 0.1, "extra": None}, sources=[build_a])
    assert len(base) == 64


def test_key_changes_when_the_builder_source_changes(tmp_path, monkeypatch):
    module_path = tmp_path / "builder_module.py"
    module_path.write_text("def build():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import builder_module

    first = cache_key("demo", {}, sources=[builder_module])
    module_path.write_text("def build():\n    return 2\n")
    importlib.reload(builder_module)
    assert cache_key("demo", {}, sources=[builder_module]) != first


def test_key_rejects_configs_json_cannot_hold():
    with pytest.raises(TypeError, match="config"):
        cache_key("demo", {"tensor": torch.zeros(1)}, sources=[])
    with pytest.raises(TypeError, match="config"):
        cache_key("demo", {"x": float("nan")}, sources=[])
    with pytest.raises(ValueError, match="name"):
        cache_key("", {}, sources=[])


def test_builds_once_then_reads_from_disk(tmp_path):
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    first, second = get(store, counter), get(store, counter)
    assert counter.calls == 1
    assert torch.equal(first.tensors["w"], second.tensors["w"]) and second.info == {"loss": 0.25}
    assert get(store, counter, {"seed": 1}) is not None and counter.calls == 2


def test_round_trip_keeps_dtypes_and_values(tmp_path):
    store = ArtifactCache(tmp_path)
    tensors = {"f": torch.randn(3, 2), "i": torch.arange(4), "b": torch.tensor([True, False]), "s": torch.tensor(2.5)}
    store.save("demo", "k" * 64, Artifact(tensors, {"nested": {"a": [1, 2]}}))
    loaded = store.load("demo", "k" * 64)
    for name, tensor in tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype and torch.equal(loaded.tensors[name], tensor)
    assert loaded.info == {"nested": {"a": [1, 2]}}


def test_default_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOORLAB_CACHE", str(tmp_path / "here"))
    assert ArtifactCache().root == tmp_path / "here"


def only_file(store):
    files = list(store.root.glob("*.safetensors"))
    assert len(files) == 1
    return files[0]


def test_truncated_file_is_reported_and_rebuilt(tmp_path):
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    path = only_file(store)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(CorruptArtifactWarning, match="corrupt"):
        rebuilt = get(store, counter)
    assert counter.calls == 2 and torch.equal(rebuilt.tensors["w"], build_a().tensors["w"])
    assert get(store, counter) is not None and counter.calls == 2  # the rebuilt file is good


def test_flipped_byte_fails_the_checksum(tmp_path):
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    path = only_file(store)
    content = bytearray(path.read_bytes())
    content[-3] ^= 0xFF  # inside the tensor data, after the header
    path.write_bytes(bytes(content))
    with pytest.warns(CorruptArtifactWarning, match="checksum"):
        get(store, counter)
    assert counter.calls == 2


def test_failed_build_or_write_leaves_no_file(tmp_path, monkeypatch):
    store = ArtifactCache(tmp_path)

    def broken():
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError):
        store.get_or_build("demo", {}, broken)
    assert not list(tmp_path.glob("*"))

    def partial_write(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "save_file", partial_write)
    with pytest.raises(OSError, match="disk full"):
        store.save("demo", "k" * 64, build_a())
    assert not list(tmp_path.glob("*")) and not list(tmp_path.glob(".*"))


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert get(store, counter).info == {"loss": 0.25} and counter.calls == 1
    assert only_file(store).read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a pickle


def test_builder_must_return_an_artifact(tmp_path):
    with pytest.raises(TypeError, match="Artifact"):
        ArtifactCache(tmp_path).get_or_build("demo", {}, lambda: {"w": torch.zeros(1)})
