"""The folder source: every mode Pillow reads, EXIF rotation, bad files skipped with reasons, clear stops."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plumbing.errors import FeatpipeError
from sources import prepare_dataset
from sources.decode import UnreadableImage, read_image
from storage.image_store import write_image_store

SIZE = 16
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def save(path, image, format=None, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format, **options)
    return path


def rgba_with_hole():
    """24x24 RGBA, opaque red with a fully transparent centre."""
    image = Image.new("RGBA", (24, 24), RED + (255,))
    image.paste((0, 0, 0, 0), (8, 8, 16, 16))
    return image


def sixteen_bit(value=40000):
    return Image.fromarray(np.full((20, 20), value, dtype=np.uint16))


def halves(size=(32, 16), first=RED, second=BLUE):
    """An RGB image whose left half is ``first`` and right half ``second``."""
    image = Image.new("RGB", size, first)
    image.paste(second, (size[0] // 2, 0, size[0], size[1]))
    return image


def rotated_jpeg(path, orientation=6):
    """A 32x16 JPEG (red left, blue right) tagged to be shown rotated 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(path, halves(), "JPEG", exif=exif.tobytes(), quality=95)


def png_bytes(size):
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()


def write_mixed_folder(root):
    """Three classes of good images in many formats and modes, bad files of every kind, hidden files.

    Returns the ids of the good files and the bad ones with a word of their reason.
    """
    good = {
        "cats/rgba.png": lambda p: save(p, rgba_with_hole()),
        "cats/palette.gif": lambda p: save(p, halves((24, 24)).convert("P", palette=Image.Palette.ADAPTIVE)),
        "cats/photo.webp": lambda p: save(p, halves((20, 30), GREEN, RED)),
        "dogs/deep.png": lambda p: save(p, sixteen_bit()),
        "dogs/cmyk.jpg": lambda p: save(p, Image.new("CMYK", (20, 20), (0, 255, 255, 0)), quality=95),
        "dogs/rotated.jpg": rotated_jpeg,
        "owls/gray.png": lambda p: save(p, Image.new("L", (18, 12), 60)),
        "owls/sub/bitmap.bmp": lambda p: save(p, Image.new("1", (16, 16), 1)),
        "owls/tiff.tif": lambda p: save(p, halves((16, 16))),
    }
    for relative, write in good.items():
        write(root / relative)
    bad = {
        "cats/empty.jpg": ("empty file", b""),
        "dogs/truncated.png": ("truncated or corrupt", png_bytes((30, 30))[:60]),
        "owls/notes.txt": ("not an image", b"these are owls\n"),
        "owls/bomb.png": ("decompression bomb", png_bytes((64, 64))),
        "owls/warned-bomb.png": ("decompression bomb", png_bytes((40, 40))),
    }
    for relative, (_, content) in bad.items():
        (root / relative).write_bytes(content)
    save(root / "cats" / ".hidden.png", halves())
    save(root / "dogs" / ".cache" / "thumb.png", halves())
    (root / ".DS_Store").write_bytes(b"\x00junk")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._photo.jpg").write_bytes(b"junk")
    (root / "cats" / "Thumbs.db").write_bytes(b"junk")
    return sorted(good), {relative: word for relative, (word, _) in bad.items()}


@pytest.fixture
def small_pixel_limit(monkeypatch):
    """Pillow's bomb limit at 1000 pixels: 64x64 raises, 40x40 only warns; the good images stay below."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.fixture
def mixed_folder(tmp_path, small_pixel_limit):
    root = tmp_path / "images"
    return (root, *write_mixed_folder(root))


def load(root, **options):
    options = {"image_size": SIZE, "max_bad_fraction": 0.5, "seed": 0, **options}
    return prepare_dataset("folder", root, **options)


def test_good_images_are_kept_and_bad_ones_skipped_with_their_reason(mixed_folder):
    root, good, bad = mixed_folder
    dataset = load(root)
    kept = sorted(dataset.splits["train"].ids + dataset.splits["test"].ids)
    assert kept == good
    assert dataset.class_names == ["cats", "dogs", "owls"]
    assert sorted(path for path, _ in dataset.skipped) == sorted(bad)
    for path, reason in dataset.skipped:
        assert bad[path] in reason, f"{path}: reason {reason!r} lacks {bad[path]!r}"
    images = dataset.splits["train"].images
    assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE, 3)
    assert dataset.class_counts("test").tolist() == [1, 1, 1]


def test_ids_keep_their_labels(mixed_folder):
    root, _, _ = mixed_folder
    dataset = load(root)
    for split in dataset.splits.values():
        for image_id, label in zip(split.ids, split.labels):
            assert image_id.split("/")[0] == dataset.class_names[label]


def test_exif_orientation_is_applied(tmp_path):
    # Shown rotated 90 degrees clockwise, the red left half becomes the top.
    image = read_image(rotated_jpeg(tmp_path / "r.jpg"), SIZE)
    top_right, bottom_left = image[2, SIZE - 3], image[SIZE - 3, 2]
    assert top_right[0] > 200 and top_right[2] < 60, f"top right should be red, got {top_right}"
    assert bottom_left[2] > 200 and bottom_left[0] < 60, f"bottom left should be blue, got {bottom_left}"


def test_modes_become_8bit_gray_or_rgb(tmp_path):
    assert read_image(save(tmp_path / "deep.png", sixteen_bit(40000)), 8).tolist() == [[156] * 8] * 8
    hole = read_image(save(tmp_path / "a.png", rgba_with_hole()), 24)
    assert hole[12, 12].tolist() == [255, 255, 255], "transparent pixels lie over white"
    cmyk = read_image(save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0))), 8)
    assert cmyk.shape == (8, 8, 3) and cmyk[4, 4, 0] > 240 and cmyk[4, 4, 1:].max() < 15
    assert read_image(save(tmp_path / "b.png", Image.new("1", (8, 8), 1)), 8).max() == 255


def test_shorter_side_is_resized_then_the_centre_cropped(tmp_path):
    # 40x20: red, green and blue bands; the centre square is all green.
    image = Image.new("RGB", (40, 20), GREEN)
    image.paste(RED, (0, 0, 8, 20))
    image.paste(BLUE, (32, 0, 40, 20))
    square = read_image(save(tmp_path / "wide.png", image), 10)
    assert square.shape == (10, 10, 3)
    assert square[:, 2:8, 1].min() > 240 and square[:, 2:8, [0, 2]].max() < 15


def test_channels_are_one_when_every_image_is_grayscale(tmp_path):
    for index, image in enumerate([Image.new("L", (20, 20), 10), sixteen_bit(), Image.new("1", (20, 20))]):
        for name in ("a", "b"):
            save(tmp_path / name / f"{index}.png", image)
    dataset = load(tmp_path)
    assert dataset.splits["train"].images.shape[1:] == (SIZE, SIZE, 1)


def test_split_is_stratified_and_reproducible(tmp_path):
    for name in ("a", "b"):
        for index in range(10):
            save(tmp_path / name / f"{index}.png", Image.new("L", (8, 8), index))
    dataset = load(tmp_path, test_fraction=0.3, seed=4)
    assert dataset.class_counts("test").tolist() == [3, 3]
    assert load(tmp_path, test_fraction=0.3, seed=4).splits["train"].ids == dataset.splits["train"].ids
    assert load(tmp_path, test_fraction=0.3, seed=5).splits["train"].ids != dataset.splits["train"].ids
    again = load(tmp_path, test_fraction=0.3, seed=4)
    assert np.array_equal(again.splits["test"].images, dataset.splits["test"].images)


def test_train_and_test_folders_give_the_split(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for index in range(count):
                save(tmp_path / split / name / f"{index}.png", Image.new("L", (8, 8), index))
    dataset = load(tmp_path)
    assert dataset.class_names == ["a", "b"]
    assert sorted(dataset.splits["test"].ids) == ["test/a/0.png", "test/a/1.png", "test/b/0.png", "test/b/1.png"]
    assert dataset.class_counts("train").tolist() == [3, 3]


# Loads a folder in a fresh process; as root it first drops to nobody, since root reads anything.
LOAD_AS_A_USER = """
import json, os, sys
from PIL import Image
from plumbing.errors import FeatpipeError
from sources import prepare_dataset
warm, folder = sys.argv[1:]
Image.init()  # Pillow imports its plugins lazily: before the privileges go
prepare_dataset("folder", warm, image_size=16, max_bad_fraction=1.0, seed=0)
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
try:
    dataset = prepare_dataset("folder", folder, image_size=16, max_bad_fraction=1.0, seed=0)
    print(json.dumps({"skipped": dataset.skipped}))
except FeatpipeError as error:
    print(json.dumps({"error": str(error)}))
"""


@pytest.fixture
def unreadable_file():
    """Class folders of two images each, one of which nobody but its owner may read (and the owner isn't us)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="featpipe-permissions-"))
    try:
        for name in ("warm/a", "warm/b", "data/a", "data/b"):
            for index in range(2):
                save(root / name / f"{index}.png", Image.new("L", (8, 8)))
        for folder in [root, *root.rglob("*")]:
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        (root / "data" / "a" / "1.png").chmod(0)
        yield root
    finally:
        shutil.rmtree(root)


def load_as_a_user(root):
    """What an unprivileged process gets from loading ``root/data``."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LOAD_AS_A_USER, str(root / "warm"), str(root / "data")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_unreadable_permissions_are_skipped(unreadable_file):
    found = load_as_a_user(unreadable_file)
    assert "'a' has 1; each class needs at least 2" in found.get("error", "")
    save(unreadable_file / "data" / "a" / "2.png", Image.new("L", (8, 8))).chmod(0o644)
    assert load_as_a_user(unreadable_file) == {"skipped": [["a/1.png", "permission denied"]]}


def test_too_many_bad_files_stop_with_the_first_ones_named(mixed_folder):
    root, _, _ = mixed_folder
    with pytest.raises(FeatpipeError) as error:
        load(root, max_bad_fraction=0.05)
    message = str(error.value)
    assert "\n" not in message
    assert "of 14 files" in message and "max_bad_fraction=0.05" in message
    assert "cats/empty.jpg (empty file)" in message


def test_a_class_with_no_readable_image_stops(tmp_path):
    save(tmp_path / "a" / "0.png", Image.new("L", (8, 8)))
    save(tmp_path / "a" / "1.png", Image.new("L", (8, 8)))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"")
    with pytest.raises(FeatpipeError, match=r"too few readable images in .*: 'b' has 0; each class needs at least 2"):
        load(tmp_path, max_bad_fraction=1.0)


def test_a_class_missing_from_test_stops(tmp_path):
    for split, names in (("train", ("a", "b")), ("test", ("a",))):
        for name in names:
            save(tmp_path / split / name / "0.png", Image.new("L", (8, 8)))
    expected = r"too few readable images in .*/test: 'b' has 0; each class needs at least one"
    with pytest.raises(FeatpipeError, match=expected):
        load(tmp_path)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (["a/0.png"], r"found 1 class folder\(s\) in .* \(a\); need at least two"),
        ([], r"found 0 class folder\(s\) .*\(none\)"),
        (["train/a/0.png", "train/b/0.png"], r"has train/ but not the other"),
    ],
)
def test_layout_mistakes_stop_with_one_line(tmp_path, layout, expected):
    for relative in layout:
        save(tmp_path / relative, Image.new("L", (8, 8)))
    with pytest.raises(FeatpipeError, match=expected):
        load(tmp_path)


def test_path_mistakes_stop_with_one_line(tmp_path):
    with pytest.raises(FeatpipeError, match=r"folder: needs data.path"):
        load(None)
    with pytest.raises(FeatpipeError, match=r"does not exist"):
        load(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FeatpipeError, match=r"is not a folder"):
        load(tmp_path / "file")


def test_no_test_fraction_without_test_folder_stops(tmp_path):
    for name in ("a", "b"):
        for index in range(2):
            save(tmp_path / name / f"{index}.png", Image.new("L", (8, 8)))
    with pytest.raises(FeatpipeError, match=r"test_fraction=0.0 holds nothing out"):
        load(tmp_path, test_fraction=0.0)


def test_unreadable_image_carries_its_reason(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UnreadableImage, match=r"truncated or corrupt|not an image"):
        read_image(tmp_path / "x.png", 8)


def test_names_that_are_not_utf8_are_stored_escaped(tmp_path):
    root = os.fsencode(tmp_path)
    for folder in (b"caf\xe9", b"plain"):
        for index in range(2):
            save(Path(os.fsdecode(root + b"/" + folder + b"/x\xff%d.png" % index)), Image.new("L", (8, 8), index * 90))
    dataset = load(tmp_path, test_fraction=0.5)
    assert dataset.class_names == ["caf\\xe9", "plain"]
    ids = sorted(dataset.splits["train"].ids + dataset.splits["test"].ids)
    assert ids == ["caf\\xe9/x\\xff0.png", "caf\\xe9/x\\xff1.png", "plain/x\\xff0.png", "plain/x\\xff1.png"]
    write_image_store(tmp_path / "images.h5", dataset.splits, source="folder", class_names=dataset.class_names, seed=0)


def test_decoding_in_several_processes_gives_the_same_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for index in range(40):
            save(tmp_path / name / f"{index}.png", Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)))
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    one = load(tmp_path, workers=1)
    two = load(tmp_path, workers=2)
    assert one.skipped == two.skipped == [("b/broken.png", "not an image Pillow can read")]
    for split in ("train", "test"):
        assert one.splits[split].ids == two.splits[split].ids
        np.testing.assert_array_equal(one.splits[split].images, two.splits[split].images)


def test_too_many_bad_files_stop_the_decoding_processes_early(tmp_path):
    for name in ("a", "b"):
        for index in range(40):
            (tmp_path / name / f"{index}.png").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f"{index}.png").write_bytes(b"")
    with pytest.raises(FeatpipeError, match=r"at least \d+ of 80 files .* cannot be read"):
        load(tmp_path, workers=2, max_bad_fraction=0.05)


def test_decoding_runs_a_few_chunks_ahead_of_its_consumer_not_all():
    # Memory stays flat however many files: only a few chunks are decoded before the consumer takes them.
    from concurrent.futures import ThreadPoolExecutor

    from sources.folder import DECODE_CHUNK, _bounded_map

    pulled = []

    def items():
        for item in range(100 * DECODE_CHUNK):
            pulled.append(item)
            yield item

    with ThreadPoolExecutor(2) as pool:
        results = _bounded_map(pool, abs, items(), ahead=3)
        first = next(results)
        assert len(pulled) <= 4 * DECODE_CHUNK
        rest = list(results)
    assert [first, *rest] == list(range(100 * DECODE_CHUNK))
