"""The repository is self-contained: no file reads test data from outside it, and the wheel carries none of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Paths that leave the checkout: the development machines' data folder beside the repository (named in pieces here,
# so this file does not itself spell a path to it), or a climb above the repository root (REPO.parent).
OUTSIDE_FOLDER = "sha" + "red"
OUTSIDE = re.compile(rf"\.\./{OUTSIDE_FOLDER}|[\"']{OUTSIDE_FOLDER}[\"']\)?\s*/|\bREPO\.parent\b|\bREPO\.parents\b")
TEXT_SUFFIXES = {".py", ".toml", ".md", ".cfg", ".ini", ".txt", ".service", ".sh", ".yml", ".yaml", ""}


def tracked_files() -> list[Path]:
    """The repository's files as git sees them (tracked and untracked-but-not-ignored); every file without git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    return [REPO / line for line in out.splitlines() if line]


def test_no_file_reads_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    offenders = []
    for path in tracked_files():
        if path.resolve() == me or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "files that reach outside the repository:\n" + "\n".join(offenders)


def test_the_guard_sees_a_path_to_the_outside_folder() -> None:
    # The pattern itself must catch the ways the old fixtures spelled the folder, or the test above cannot fail.
    for line in (
        f'DATA = REPO.parent / "{OUTSIDE_FOLDER}" / "data"',
        f"photos in ../{OUTSIDE_FOLDER}/data/photos",
        f'DATA = Path("{OUTSIDE_FOLDER}") / "data"',
        "REPO.parents[1]",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search('DATA = REPO / "tests" / "data"')


def test_the_test_data_is_in_the_repository(data_dir: Path, photos: list[Path]) -> None:
    assert data_dir.resolve().is_relative_to(REPO)
    assert len(photos) == 21
    assert (data_dir / "video" / "Megamind.avi").is_file()
    assert len(list((data_dir / "coral" / "edgetpu-pairs").glob("*_edgetpu.tflite"))) == 4
    for notice in ("NOTICE.md", "LICENSE-opencv-samples", "coral/NOTICE.md", "coral/LICENSE"):
        assert (data_dir / notice).is_file(), notice
