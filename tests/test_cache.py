"""Tests of backdoorlab.cache: keys, atomic writes, corruption, no unpickling."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from backdoorlab import cache as cache_module
from backdoorlab.cache import Artifact, ArtifactCache, CorruptArtifactWarning, cache_key
from backdoorlab.data import ImageSet
from backdoorlab.zoo import ModelConfig, train_zoo


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


# --------------------------------------------------------------------------- reliability (issue 15)

import json
import os
import time
import warnings

from safetensors import safe_open
from safetensors.torch import save_file

# Looked up lazily so that these tests run (and fail for the stated reason) on the old code too.
CachePermissionWarning = getattr(cache_module, "CachePermissionWarning", UserWarning)


def rewrite_info(path, change):
    """Rewrite a cached file with its tensors and checksum intact but ``info`` edited."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    info = json.loads(metadata["info"])
    change(info)
    metadata["info"] = json.dumps(info)
    save_file(tensors, str(path), metadata=metadata)


def test_an_edited_info_fails_the_checksum(tmp_path):
    """Item 2: on main the checksum covered the tensors only, so an edited metric was served."""
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    rewrite_info(only_file(store), lambda info: info.update(loss=0.99))
    with pytest.warns(CorruptArtifactWarning, match="checksum"):
        again = get(store, counter)
    assert counter.calls == 2 and again.info == {"loss": 0.25}


@pytest.mark.parametrize("name", ["../outside", "/tmp/absolute", "a/b", "..", ".hidden", "a\\b", ""])
def test_names_cannot_leave_the_cache_folder(tmp_path, name):
    """Item 7: on main a name with '/' or '..' or an absolute path wrote outside the root."""
    store = ArtifactCache(tmp_path / "root")
    with pytest.raises(ValueError, match="name"):
        store.get_or_build(name, {}, build_a)
    with pytest.raises(ValueError, match="name"):
        store.save(name, "k" * 64, build_a())
    assert not (tmp_path / "outside-kkkkkkkkkkkkkkkkkkkkkkkk.safetensors").exists()
    assert not list(tmp_path.rglob("*.safetensors"))


def test_files_are_readable_by_other_users(tmp_path):
    """Item 8: on main files were created 0600 (mkstemp), unreadable in a shared folder."""
    store = ArtifactCache(tmp_path)
    get(store, Counter(build_a))
    assert only_file(store).stat().st_mode & 0o777 == 0o644


def deny_reading(monkeypatch, path):
    """Simulate a file owned by another user with mode 0600 (works as root too)."""
    real_open = open

    def fake_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)


def test_an_unreadable_file_is_reported_as_such_and_left_alone(tmp_path, monkeypatch):
    """Item 8: on main another user's unreadable file was called corrupt, deleted and rebuilt."""
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    path = only_file(store)
    content = path.read_bytes()
    deny_reading(monkeypatch, path)
    # the folder may not be written either (a second user's shared folder)
    monkeypatch.setattr(cache_module.tempfile, "mkstemp", deny_writing)
    with pytest.warns(CachePermissionWarning) as record:
        built = get(store, counter)
    messages = " ".join(str(w.message) for w in record)
    assert "cannot be read" in messages and "corrupt" not in messages
    assert counter.calls == 2 and torch.equal(built.tensors["w"], build_a().tensors["w"])
    assert path.read_bytes() == content  # the other user's file is untouched (read_bytes uses io.open)


def deny_writing(*args, **kwargs):
    raise PermissionError(13, "Permission denied", kwargs.get("dir"))


def test_a_read_only_folder_returns_the_built_artifact_uncached(tmp_path, monkeypatch):
    """Item 8: on main a read-only folder built the artifact, then raised and lost it."""
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    monkeypatch.setattr(cache_module.tempfile, "mkstemp", deny_writing)
    getattr(cache_module, "_WARNED_UNWRITABLE", set()).discard(str(tmp_path))
    with pytest.warns(CachePermissionWarning, match="cannot be written"):
        first = get(store, counter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per folder, not on every artifact
        second = get(store, counter, {"seed": 1})
    assert torch.equal(first.tensors["w"], build_a().tensors["w"]) and second.info == {"loss": 0.25}
    assert counter.calls == 2 and not list(tmp_path.iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_real_read_only_folder_and_unreadable_file(tmp_path):
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    path = only_file(store)
    path.chmod(0o000)
    tmp_path.chmod(0o555)
    getattr(cache_module, "_WARNED_UNWRITABLE", set()).discard(str(tmp_path))
    try:
        with pytest.warns(CachePermissionWarning):
            built = get(store, counter)
        assert counter.calls == 2 and built.info == {"loss": 0.25} and path.exists()
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    """Item 8: on main a killed writer's .tmp stayed forever; a fresh one (a live writer) stays."""
    store = ArtifactCache(tmp_path)
    stale = tmp_path / ".demo-0123.safetensors.abc.tmp"
    fresh = tmp_path / ".demo-4567.safetensors.def.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    old = time.time() - 2 * getattr(cache_module, "STALE_SECONDS", 3600.0)
    os.utime(stale, (old, old))
    get(store, Counter(build_a))
    assert not stale.exists() and fresh.exists()


def test_info_round_trip_is_the_same_on_a_hit_and_a_miss(tmp_path):
    """Item 8: on main a NaN in info raised after the build (the artifact lost), and a hit
    returned lists where the miss returned tuples."""
    def build():
        return Artifact({"w": torch.zeros(2)}, {"pair": (1, 2), "score": float("nan")})

    store = ArtifactCache(tmp_path)
    miss = store.get_or_build("demo", {}, build)
    hit = store.get_or_build("demo", {}, build)
    assert miss.info["pair"] == hit.info["pair"] == [1, 2]
    assert math.isnan(miss.info["score"]) and math.isnan(hit.info["score"])


def test_configs_with_non_string_keys_are_refused():
    """Item 8: on main {1: 2} and {"1": 2} got the same key."""
    assert cache_key("demo", {"1": 2}, sources=[])
    with pytest.raises(TypeError, match="config"):
        cache_key("demo", {1: 2}, sources=[])
    with pytest.raises(TypeError, match="config"):
        cache_key("demo", {"nested": {2: 3}}, sources=[])


def test_info_that_json_cannot_hold_is_named(tmp_path):
    store = ArtifactCache(tmp_path)
    with pytest.raises(TypeError, match="info.*'model'"):
        store.get_or_build("demo", {}, lambda: Artifact({"w": torch.zeros(1)}, {"model": object()}))


class NotOnCpu(torch.Tensor):
    """Behaves like a CUDA tensor for the checksum: ``.numpy()`` fails until ``.cpu()``."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor)


def test_checksum_moves_tensors_to_the_cpu_first():
    """Item 11: on main ``_checksum`` called ``.numpy()`` directly, which fails on CUDA tensors."""
    plain = torch.arange(4, dtype=torch.float32)
    assert cache_module._checksum({"w": plain.as_subclass(NotOnCpu)}) == cache_module._checksum({"w": plain})


def test_an_unreadable_file_is_not_replaced_even_in_a_writable_folder(tmp_path, monkeypatch):
    """Item 8: on main another user's file that could not be read was deleted and rewritten."""
    store, counter = ArtifactCache(tmp_path), Counter(build_a)
    get(store, counter)
    path = only_file(store)
    before = path.stat()
    deny_reading(monkeypatch, path)
    with pytest.warns(CachePermissionWarning):
        get(store, counter)
    after = path.stat()
    assert counter.calls == 2 and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


DIGITS = tuple("0123456789")


def test_train_zoo_cache_keys_on_the_data_not_its_size(tmp_path):
    """Item 1: on main a cached group was keyed on ``len(data)`` only, so the same configs
    trained on other data of the same size (here all zeros) came back with the old weights."""
    store = ArtifactCache(tmp_path)
    random_images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    first_data = ImageSet(random_images, torch.arange(32) % 10, DIGITS)
    zero_data = ImageSet(torch.zeros(32, 1, 28, 28), torch.zeros(32, dtype=torch.long), DIGITS)
    options = dict(subset_size=16, batch_size=8, min_accuracy=0.0, cache=store)
    first = train_zoo([ModelConfig(0)], first_data, first_data, **options)
    other = train_zoo([ModelConfig(0)], zero_data, zero_data, **options)
    again = train_zoo([ModelConfig(0)], first_data, first_data, **options)
    assert first.groups_built == 1 and other.groups_built == 1 and again.groups_built == 0
    assert not torch.equal(first.stack.parameter_dict()["fc.weight"], other.stack.parameter_dict()["fc.weight"])
