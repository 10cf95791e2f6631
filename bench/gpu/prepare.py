"""Prepare a GPU window here: what bench/gpu.sh needs on the device machine that only the checkout
carries there (git-ignored, 64 MiB in all with the checkout).

- `wheels/`: the wheels of the packages the device's image lacks (ENVIRONMENT.md: torchcodec,
  webdataset, braceexpand, and pytest's for tests/test_gpu.py), for its Python (3.12, manylinux),
  and `wheels.txt`, which module each wheel provides: gpu.sh installs only those it cannot import.
  Ray (79 MB) does not fit and no stage needs it.
- `artworks-sample/`: the sample's 300 images re-encoded at --size px on the shorter side, where
  ARTDATE_SAMPLE points the tests and benchmarks instead of ../shared (which does not travel).

    python bench/gpu/prepare.py                                   # then, on the device:
    bash bench/gpu.sh "$OUT"                                      # (the run tool: carry gpu-window)
"""

import argparse
import csv
import os
import subprocess
import sys

from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINDOW = os.path.join(ROOT, "gpu-window")  # git-ignored
SAMPLE_CSV = os.path.join(ROOT, "metadata", "sample", "artworks.csv")
SHARED_SAMPLE = os.path.join(os.path.dirname(ROOT), "shared", "artworks-sample")
CARRY_LIMIT = 64 * 2**20  # what a device call carries, the checkout included
# (requirement, the module it provides): the packages the device's image lacks, then those artdate
# and tests/test_gpu.py import that an image may lack (pytest and its own; requests and tqdm, which
# pack imports): each costs little, and gpu.sh installs only what the image cannot import.
WHEELS = [
    ("torchcodec==0.16.0", "torchcodec"),
    ("webdataset==1.0.2", "webdataset"),
    ("braceexpand==0.1.7", "braceexpand"),
    ("pytest==9.0.3", "pytest"),
    ("pluggy==1.6.0", "pluggy"),
    ("iniconfig==2.3.0", "iniconfig"),
    ("packaging==25.0", "packaging"),
    ("pygments==2.19.2", "pygments"),
    ("requests==2.32.5", "requests"),
    ("urllib3==2.5.0", "urllib3"),
    ("idna==3.10", "idna"),
    ("certifi==2025.8.3", "certifi"),
    ("charset-normalizer==3.4.3", "charset_normalizer"),
    ("tqdm==4.67.1", "tqdm"),
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux2014_x86_64"]


def download_wheels(folder: str, python_version: str) -> list[str]:
    """The wheels of WHEELS for `python_version` into `folder`; the lines of wheels.txt."""
    os.makedirs(folder, exist_ok=True)
    lines = []
    for requirement, module in WHEELS:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", python_version, *platforms, "--dest", folder, requirement]
        subprocess.run(command, check=True)
        name = requirement.split("==")[0].replace("-", "_").lower()
        (wheel,) = [w for w in os.listdir(folder) if w.lower().startswith(name + "-") and w.endswith(".whl")]
        lines.append(f"{module} {wheel}")
    return lines


def reencode_sample(out: str, size: int, quality: int) -> int:
    """The sample's images at `size` px on the shorter side under `out`, at the paths its CSV names."""
    if not os.path.isdir(SHARED_SAMPLE):
        sys.exit(f"needs the sample's images in {SHARED_SAMPLE}")
    with open(SAMPLE_CSV, encoding="utf-8") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    for name in files:
        target = os.path.join(out, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with Image.open(os.path.join(SHARED_SAMPLE, name)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            scale = size / min(image.size)
            if scale < 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
            image.save(target, "JPEG", quality=quality)
    return len(files)


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def carried_files() -> list[str]:
    """What a device call carries of the checkout: its tracked and untracked, not ignored, files
    (relative paths)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return [p.decode() for p in listed if p and os.path.isfile(os.path.join(ROOT, p.decode()))]


def checkout_bytes() -> int:
    return sum(os.path.getsize(os.path.join(ROOT, name)) for name in carried_files())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=WINDOW)
    parser.add_argument("--python-version", default="3.12", help="the device's Python (3.12 there)")
    parser.add_argument("--size", type=int, default=288, help="the sample's shorter side, px (pack stores 256)")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    wheels = os.path.join(args.out, "wheels")
    lines = download_wheels(wheels, args.python_version)
    with open(os.path.join(args.out, "wheels.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    images = reencode_sample(os.path.join(args.out, "artworks-sample"), args.size, args.quality)
    window, checkout = folder_bytes(args.out), checkout_bytes()
    print(f"{args.out}: {len(lines)} wheels, {images} images; {window / 2**20:.1f} MiB + the checkout's "
          f"{checkout / 2**20:.1f} MiB of the {CARRY_LIMIT / 2**20:.0f} MiB a call carries")  # fmt: skip
    if window + checkout > CARRY_LIMIT:
        sys.exit("too large to travel: lower --size")


if __name__ == "__main__":
    main()
