"""`make lock`: each lock of requirements/ made again from pyproject.toml with pip-compile.

Exact versions with the hashes of every file published for them, and no index address or path:
they install from whatever index pip is set up to use, and only the files hashed here.
tests/unit/test_locks.py fails while a lock disagrees with pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
ROOT = FOLDER.parent
SELF = "payment-service"

LOCKS: dict[str, tuple[str, ...]] = {
    "service.txt": (),
    "run.txt": ("embedded",),
    "dev.txt": ("dev",),
    "tools.txt": ("dev", "bench", "chaos", "deploy"),
}
"""Each lock of the project's dependencies and the extras it adds to them: service.txt for
the image, run.txt for `make run`, dev.txt for `make test`, tools.txt for `make bench`,
`make chaos` and `make deploy-check`."""
BUILD_LOCK = "build.txt"
"""The build backend (hatchling, and editables for an editable install)."""
PIP_LOCK = "pip.txt"
"""pip itself (from pip.in), installed first: the rest then installs faster."""

_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--no-emit-index-url",
    "--no-emit-find-links",
    "--no-emit-trusted-host",
    "--no-emit-options",
    "--strip-extras",
    # The dev extra names the project itself (payment-service[embedded]): left out, else it
    # would be pinned as a path on this machine.
    "--unsafe-package",
    SELF,
]
_UNPINNED = "# WARNING: The following packages were not pinned"


def compile_lock(name: str, extra_flags: list[str], source: str = "pyproject.toml") -> None:
    subprocess.run(  # noqa: S603 - pip-compile beside this Python, with fixed arguments
        [
            str(Path(sys.executable).parent / "pip-compile"),
            *_FLAGS,
            *extra_flags,
            "--output-file",
            f"requirements/{name}",
            source,
        ],
        cwd=ROOT,
        check=True,
    )
    _drop_unpinned_note(FOLDER / name)


def _drop_unpinned_note(path: Path) -> None:
    """pip-compile notes the project it left out at the end; the note goes."""
    text = path.read_text()
    if _UNPINNED in text:
        path.write_text(text[: text.index(_UNPINNED)].rstrip("\n") + "\n")


def main(arguments: list[str]) -> int:
    upgrade = ["--upgrade"] if "--upgrade" in arguments else []
    compile_lock(PIP_LOCK, ["--allow-unsafe", *upgrade], source="requirements/pip.in")
    compile_lock(BUILD_LOCK, ["--only-build-deps", "--all-build-deps", *upgrade])
    for name, extras in LOCKS.items():
        compile_lock(name, [f"--extra={extra}" for extra in extras] + upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
