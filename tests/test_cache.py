"""cache.py: decode once into a memory-mapped file, reuse it, never trust a half-built one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import write_image
from ncfm import NcfmError
from ncfm import cache
from ncfm.cache import cache_paths, decode_resized, load_images, load_images_masked


@pytest.fixture
def images(tmp_path):
    """Six small JPEGs of two sizes under tmp_path/data."""
    root = tmp_path / "data"
    names = []
    for i in range(6):
        name = f"train/ALB/img_{i:05d}.jpg"
        write_image(root / name, size=(64, 36) if i % 2 else (50, 40), colour=(40 * i, 90, 200 - 30 * i))
        names.append(name)
    return root, names


def test_pixels_are_a_read_only_uint8_memmap_of_the_right_shape(images):
    root, names = images
    x = load_images(root, names, 24, workers=1, progress=False)
    assert isinstance(x, np.memmap)
    assert x.shape == (6, 24, 24, 3) and x.dtype == np.uint8
    assert not x.flags.writeable
    np.testing.assert_array_equal(x[3], decode_resized(root / names[3], 24))


def test_cache_lives_in_data_dir_cache_by_default(images):
    root, names = images
    load_images(root, names, 24, workers=1, progress=False)
    data, meta = cache_paths(root, names, 24)
    assert data.parent == root / "cache" and data.name.startswith("s24-") and data.suffix == ".u8"
    assert data.is_file() and meta.is_file()


def test_second_call_decodes_nothing(images, monkeypatch):
    root, names = images
    first = np.array(load_images(root, names, 24, workers=1, progress=False))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although a finished cache exists")

    monkeypatch.setattr(cache, "decode_resized", no_decoding)
    again = load_images(root, names, 24, workers=1, progress=False)
    np.testing.assert_array_equal(first, again)


def test_key_changes_with_size_image_list_and_file_contents(images):
    root, names = images
    base = cache_paths(root, names, 24)[0]
    assert cache_paths(root, names, 32)[0] != base
    assert cache_paths(root, names[:-1], 24)[0] != base
    assert cache_paths(root, names[::-1], 24)[0] != base
    st = os.stat(root / names[0])
    os.utime(root / names[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_paths(root, names, 24)[0] != base


def test_interrupted_build_leaves_no_cache_that_looks_complete(images, monkeypatch):
    root, names = images
    calls = []
    real = cache.decode_resized

    def interrupted(path, size):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache, "decode_resized", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_images(root, names, 24, workers=1, progress=False)
    data, meta = cache_paths(root, names, 24)
    assert not data.exists() and not meta.exists()
    assert list((root / "cache").iterdir()) == []  # no temp file left behind either
    monkeypatch.setattr(cache, "decode_resized", real)
    assert load_images(root, names, 24, workers=1, progress=False).shape == (6, 24, 24, 3)


def test_a_disk_too_small_for_the_cache_fails_before_decoding_and_leaves_nothing(images, monkeypatch):
    import errno

    root, names = images
    decoded = []
    monkeypatch.setattr(cache, "decode_resized", lambda path, size: decoded.append(path))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError) as e:
        load_images(root, names, 24, workers=1, progress=False)
    assert e.value.errno == errno.ENOSPC and "the image cache needs" in e.value.strerror
    assert decoded == []  # refused before minutes of decoding, not killed by SIGBUS halfway
    assert list((root / "cache").iterdir()) == []


def test_pixel_file_without_its_meta_is_rebuilt(images):
    root, names = images
    x = np.array(load_images(root, names, 24, workers=1, progress=False))
    data, meta = cache_paths(root, names, 24)
    meta.unlink()
    data.write_bytes(b"\0" * data.stat().st_size)  # as if a crash hit before the meta was written
    np.testing.assert_array_equal(load_images(root, names, 24, workers=1, progress=False), x)


def test_an_image_that_failed_for_a_passing_reason_is_decoded_again(images, monkeypatch):
    root, names = images
    real = cache.decode_resized

    def flaky(path, size):
        if path.endswith(names[2]):
            raise OSError(5, "Input/output error")  # a network disk's hiccup, say
        return real(path, size)

    monkeypatch.setattr(cache, "decode_resized", flaky)
    x, bad = load_images_masked(root, names, 24, workers=1, progress=False)
    assert bad == [2] and not x[2].any()
    monkeypatch.setattr(cache, "decode_resized", real)  # the file itself never changed
    x, bad = load_images_masked(root, names, 24, workers=1, progress=False)
    assert bad == [] and x[2].any()


def test_parallel_build_matches_serial(images, tmp_path):
    root, names = images
    names = names * 20  # enough rows for two workers
    serial = load_images(root, names, 16, cache_dir=tmp_path / "c1", workers=1, progress=False)
    parallel = load_images(root, names, 16, cache_dir=tmp_path / "c2", workers=2, progress=False)
    np.testing.assert_array_equal(serial, parallel)


def test_unreadable_image_raises_naming_the_file(images):
    root, names = images
    (root / names[2]).write_bytes(b"")
    with pytest.raises(NcfmError, match=r"img_00002.jpg: empty file \(0 bytes\)"):
        load_images(root, names, 24, workers=1, progress=False)


def test_masked_loading_zeroes_unreadable_rows_and_lists_them(images):
    root, names = images
    (root / names[1]).write_bytes((root / names[0]).read_bytes()[:200])
    x, bad = load_images_masked(root, names, 24, workers=1, progress=False)
    assert bad == [1]
    assert not x[1].any() and x[0].any()
    y, bad_again = load_images(root, names, 24, workers=1, progress=False, on_error="mask")
    assert bad_again == [1]


def test_empty_image_list_gives_an_empty_array(images):
    root, _ = images
    assert load_images(root, [], 24, progress=False).shape == (0, 24, 24, 3)


def test_a_cache_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    write_image(tmp_path / "a.jpg")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(NcfmError, match=r"blocked/?\S*: cannot make the image cache folder.*--cache-dir"):
        load_images(tmp_path, ["a.jpg"], 32, cache_dir=blocked)
    assert blocked.read_text() == "a file where the cache folder should be"  # nothing lost
