"""Output folders that are written completely or not at all.

:func:`check_output_dir` refuses, before anything is read or written, an output folder that cannot be written
(a file, under a file, not writable), one inside an input tree (the next run would read the outputs back as
input), and one that already holds files unless ``overwrite=True``.

:class:`StagedOutput` writes into a hidden staging folder beside the final one and moves it into place only when
everything succeeded (:meth:`StagedOutput.commit`); on any error or Ctrl-C the staging folder is removed and
whatever was at the final path before is untouched. With ``overwrite=True`` the old folder is replaced as a
whole, so two runs are never mixed. Inside the staging folder :meth:`StagedOutput.entry` writes each item
(e.g. one synthetic sample) into its own temporary folder and renames it, so even a killed process leaves no
partial file under a final name.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> check_output_dir(out)
    >>> with StagedOutput(out) as stage:
    ...     with stage.entry("sample0") as folder:
    ...         _ = (folder / "a.txt").write_text("x")
    ...     final = stage.commit()
    >>> sorted(p.name for p in final.iterdir())
    ['sample0']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["StagedOutput", "check_output_dir", "existing_ancestor", "write_atomic"]

_STAGE = ".samraug-staging-"
_OLD = ".samraug-replaced-"


def existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def check_output_dir(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    arg: str = "--out",
) -> None:
    """Refuse an output folder that cannot or must not be written (see the module docstring).

    Raises:
        FileExistsError: ``out`` holds files and ``overwrite`` is False.
        NotADirectoryError: ``out`` (or an ancestor) is a file.
        PermissionError: the folder cannot be created or written.
        ValueError: ``out`` is inside one of the ``inputs`` folders (or is one).
    """
    out = Path(out).expanduser()
    for item in inputs:
        root = Path(item).expanduser()
        if root.is_dir() and _is_within(out, root):
            raise ValueError(
                f"{arg} {str(out)!r} is inside the input folder {str(root)!r}; the next run would read the outputs "
                f"back as input. Choose an {arg} outside it"
            )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{arg} {str(out)!r} is a file, not a folder; pass a folder path")
    base = existing_ancestor(out)
    if not base.is_dir():
        raise NotADirectoryError(f"{arg} {str(out)!r} lies under the file {str(base)!r}; pass a folder path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{arg} {str(out)!r}: cannot write in {str(base)!r} (permission denied); pass another")
    if out.is_dir() and not overwrite:
        entries = [p.name for p in out.iterdir()]
        if entries:
            shown = ", ".join(sorted(entries)[:5]) + (" ..." if len(entries) > 5 else "")
            raise FileExistsError(
                f"{arg} {str(out)!r} already holds {len(entries)} entries ({shown}), e.g. an earlier run; pass "
                f"--overwrite to replace the whole folder, or choose a new {arg}. Nothing was written"
            )


class StagedOutput:
    """Build an output folder in a staging folder and move it into place at :meth:`commit` (atomic).

    Args:
        out: The final folder.
        overwrite: Replace an existing non-empty ``out`` as a whole at commit (otherwise commit refuses it).
        arg: The argument name used in error messages.
    """

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False, arg: str = "--out") -> None:
        self.out = Path(os.path.abspath(Path(out).expanduser()))
        self.overwrite = bool(overwrite)
        self.arg = arg
        self.path: Path | None = None
        self.committed = False

    def __enter__(self) -> StagedOutput:
        base = existing_ancestor(self.out.parent)
        self.path = base / f"{_STAGE}{self.out.name}-{uuid.uuid4().hex[:8]}"
        try:
            self.path.mkdir()
        except OSError as e:
            self.path = None
            raise PermissionError(f"{self.arg} {str(self.out)!r}: cannot write in {str(base)!r} ({e})") from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None and not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def entry(self, name: str) -> Iterator[Path]:
        """A temporary folder for the entry ``name``, renamed to ``<staging>/name`` when the block succeeds."""
        if self.path is None:
            raise RuntimeError("StagedOutput.entry needs the staging folder: use it inside `with StagedOutput(...)`")
        if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("..", "."):
            raise ValueError(f"output entry name {name!r} must be a plain file name")
        final = self.path / name
        if final.exists():
            raise FileExistsError(f"two outputs are named {name!r}; output names must be unique")
        tmp = self.path / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def commit(self) -> Path:
        """Move the staging folder to ``out`` (replacing an existing one only with ``overwrite``); returns ``out``."""
        if self.path is None:
            raise RuntimeError("StagedOutput.commit outside `with StagedOutput(...)`")
        out = self.out
        out.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if out.exists():
            if not out.is_dir():
                raise NotADirectoryError(f"{self.arg} {str(out)!r} is a file, not a folder; pass a folder path")
            if any(out.iterdir()):
                if not self.overwrite:
                    raise FileExistsError(
                        f"{self.arg} {str(out)!r} was filled by someone else during this run; nothing was replaced "
                        f"(pass --overwrite to replace it)"
                    )
                old = out.parent / f"{_OLD}{out.name}-{uuid.uuid4().hex[:8]}"
                os.replace(out, old)
            else:
                out.rmdir()
        try:
            os.replace(self.path, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return out


def write_atomic(path: str | os.PathLike, write: str | Callable[[Path], Any]) -> Path:
    """Write one file through a temporary name in the same folder, then rename it into place (a reader never sees
    a partial file; on error the temporary file goes and ``path`` is untouched). ``write`` is the text, or a
    function that writes the file it is given (keep its suffix: plotting libraries pick the format from it).

    Example:
        >>> import tempfile
        >>> p = write_atomic(Path(tempfile.mkdtemp()) / "report.json", '{"ok": true}')
        >>> p.read_text()
        '{"ok": true}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        if isinstance(write, str):
            tmp.write_text(write, encoding="utf-8")
        else:
            write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
