"""Images: only regular files, only the formats bneck lists, bounded memory, Ctrl-C always works.

Real processes with a timeout, so that a hang fails the test instead of freezing it:
a folder whose ``*.jpg`` names hide ``/dev/zero``, ``/dev/urandom``, a FIFO, a socket
and a folder; other formats (EPS, TIFF, ICO, ...) named ``.jpg``; images whose
header declares more pixel bytes than allowed; 16-bit PNGs of 9,400 x 9,400 pixels
(172 KB on disk, hundreds of MB decoded) decoded together on all threads.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from bneck.features.images.decode import FORMATS, UnusableImage, decode_image
from tests.conftest import ROOT
from tests.generated import cli_args, make_images

pytestmark = pytest.mark.pure

BNECK = [sys.executable, "-m", "bneck"]


def _env(tmp_path):
    return dict(os.environ, BNECK_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))


def _plant_non_regular(folder) -> dict:
    """Names with image extensions that are not regular files; returns {name: what it is}."""
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.symlink("/dev/urandom", folder / "random.png")
    os.mkfifo(folder / "fifo.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.webp"))
    (folder / "folder.jpg").mkdir()
    (folder / "folder.jpg" / "x.txt").write_text("not an image")
    return {
        "zero.jpg": "character device",
        "random.png": "character device",
        "fifo.jpg": "FIFO",
        "socket.webp": "socket",
    }


@pytest.mark.parametrize("follow_links", [False, True])
def test_devices_fifos_and_sockets_are_quarantined_never_read(tmp_path, tiny, follow_links):
    data = make_images(tmp_path / "data", 2, splits=("train",))
    planted = _plant_non_regular(data / "train" / "cats")
    done = subprocess.run(
        [
            *BNECK,
            "extract",
            data,
            "--out",
            tmp_path / "out",
            *cli_args(tiny),
            "--quiet",
            *(["--follow-links"] if follow_links else []),
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for name, what in planted.items():
        line = next(line for line in done.stdout.splitlines() if f"train/cats/{name}:" in line)
        if name in ("zero.jpg", "random.png") and not follow_links:  # links out of the data folder
            assert "a symbolic link to a file outside the data folder" in line, line
        else:
            assert "not a regular file" in line and what in line, line
    assert "network ran on 4 image(s)" in done.stdout  # the good ones went through


def test_predict_reports_a_fifo_instead_of_waiting_for_it(tmp_path, tiny):
    from bneck.features import extract
    from bneck.pipeline import train

    data = make_images(tmp_path / "data", 2)
    extract(data, tmp_path / "f", cache_dir=tmp_path / "c", verbose=False, **tiny)
    train(tmp_path / "f", ["logreg"], tmp_path / "m", verbose=False)
    os.mkfifo(tmp_path / "fifo.jpg")
    done = subprocess.run(
        [*BNECK, "predict", tmp_path / "m" / "logreg", tmp_path / "fifo.jpg", data / "test" / "cats"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert "fifo.jpg: error: not a regular file: a FIFO" in done.stderr
    assert done.stdout.count(": cats  ") + done.stdout.count(": dogs  ") == 2  # the real images still classified


def test_huge_or_endless_files_are_refused_from_their_size_in_seconds(tmp_path, tiny):
    """A sparse 3 GB WebP (Pillow reads WebP whole), a sparse 16 GB JPEG and a link to /proc/self/pagemap
    (a 'regular' file of size 0 that yields hundreds of GB) cost neither memory nor minutes."""
    data = make_images(tmp_path / "data", 2, splits=("train",))
    cats = data / "train" / "cats"
    Image.new("RGB", (64, 64)).save(cats / "big.webp")
    os.truncate(cats / "big.webp", 3 << 30)
    (cats / "huge.jpg").write_bytes((cats / "cat.0.jpg").read_bytes())
    os.truncate(cats / "huge.jpg", 16 << 30)
    os.symlink("/proc/self/pagemap", cats / "cute_kitten.jpg")
    start = time.perf_counter()
    # The command runs under a fresh wrapper process whose only child it is, so the peak RSS the
    # wrapper reports is the command's own (RUSAGE_CHILDREN of the test process counts every child
    # the whole session has waited for).
    wrapper = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(done.returncode)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            *map(str, BNECK),
            "extract",
            data,
            "--out",
            tmp_path / "out",
            *cli_args(tiny),
            "--quiet",
            "--follow-links",
        ],  # even when links are followed (else the link is not even read)
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    said = {
        name: next(line for line in done.stdout.splitlines() if f"train/cats/{name}:" in line)
        for name in ("big.webp", "huge.jpg", "cute_kitten.jpg")
    }
    assert "too large: 3072 MB" in said["big.webp"] and "too large: 16384 MB" in said["huge.jpg"]
    assert "not a real file" in said["cute_kitten.jpg"]
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    assert seconds < 120 and peak_kb < 3 << 20  # KB: < 3 GB


def _save(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
    b"(would run in Ghostscript) print\nshowpage\n%%EOF\n"
)


@pytest.mark.parametrize("fmt", ["EPS", "TIFF", "ICO", "PCX", "TGA", "PPM", "SGI", "IM", "DDS"])
def test_formats_outside_the_list_named_jpg_never_reach_a_decoder(tmp_path, fmt):
    cats = make_images(tmp_path / "data", 1, splits=("train",)) / "train" / "cats"
    photo = Image.open(cats / "cat.0.jpg").convert("RGB").resize((32, 32))
    path = tmp_path / "photo.jpg"
    path.write_bytes(EPS if fmt == "EPS" else _save(photo, fmt))
    assert Image.open(path).format == fmt  # Pillow on its own would open it
    spawned = []
    sys.addaudithook(lambda event, args: spawned.append(args) if event == "subprocess.Popen" else None)
    with pytest.raises(UnusableImage, match=f"not one of {', '.join(FORMATS)}"):
        decode_image(str(path), 224)
    assert spawned == []  # no external decoder (Ghostscript for EPS) was started


def _png_header(width: int, height: int, depth: int, color: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_too_many_pixel_bytes_are_refused_from_the_header(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(_png_header(9000, 9000, 8, 6))  # 81 M RGBA pixels: under the pixel limit, 324 MB of data
    start = time.perf_counter()
    with pytest.raises(UnusableImage, match="too large"):
        decode_image(str(path), 224)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded


MEMORY_PROBE = """
import json, resource, sys, numpy as np
from PIL import Image
from bneck.features.images.batches import decoded_batches
from bneck.features.images.decode import decode_cost
paths = sys.argv[1:]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = [len(keys) for keys, _, _ in decoded_batches([(p, p) for p in paths], 224, 4, workers=4)]
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"grew": grew, "decoded": sum(out), "estimate": decode_cost("I;16", 9400, 9400)[1]}))
"""


def test_large_decodes_wait_for_each_other_within_the_memory_budget(tmp_path):
    paths = []
    for i in range(4):  # 172 KB each on disk, about 0.5 GB each while decoding
        arr = np.full((9400, 9400), 1000 * (i + 1), np.uint16)
        Image.fromarray(arr).save(tmp_path / f"big{i}.png")
        paths.append(str(tmp_path / f"big{i}.png"))
    budget = 1 << 30
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, *paths],
        capture_output=True,
        text=True,
        env=dict(os.environ, BNECK_DECODE_MEMORY=str(budget), PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        timeout=300,
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["decoded"] == 4
    # Four at once would need about 2 GB; the budget lets one in at a time (each estimate > budget / 2).
    assert probe["estimate"] > budget // 2 and probe["grew"] < budget, probe
