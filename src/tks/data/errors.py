"""The data package's user errors: missing or malformed dataset files, each reported in one line."""

from __future__ import annotations

from pathlib import Path

from tks.errors import TKSError


class DatasetError(TKSError):
    """A dataset that cannot be loaded: no root given, a folder or file missing, a file that does not parse."""


class EventFileError(DatasetError):
    """An event file that is truncated or corrupt; the message names the file and the byte offset."""

    def __init__(self, path: str | Path, offset: int, problem: str) -> None:
        self.path, self.offset, self.problem = str(path), offset, problem
        super().__init__(f"{path}: {problem} (at byte {offset})")

    def __reduce__(self) -> tuple:
        # rebuilt from its three parts when it crosses from a worker process to the parent
        return type(self), (self.path, self.offset, self.problem)


def missing(dataset: str, path: str | Path | None, layout: str) -> DatasetError:
    """The error for a dataset whose files are not where they were looked for.

    Args:
        dataset: registered name.
        path: the folder or file tried (``None`` when no root was given).
        layout: the expected layout and where the data comes from, one sentence.
    """
    where = "no data root given (set data.root or --root)" if path is None else f"nothing usable at {path}"
    return DatasetError(f"{dataset}: {where}; expected {layout} (see docs/datasets.md)")
