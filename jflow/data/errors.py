"""Dataset errors: a missing or incomplete folder, or a sample that cannot be read."""
from jflow.errors import UserError


class DatasetError(UserError):
    """A dataset folder is missing or incomplete; the message lists the expected layout."""


class CorruptSampleError(DatasetError):
    """One sample could not be read; the message names its file(s)."""


def missing_layout_error(dataset: str, root: str, problem: str, layout: str) -> DatasetError:
    """Build a `DatasetError` naming the dataset, its root, the problem and the expected layout."""
    return DatasetError(
        f"{dataset}: {problem} (root: {root!r}).\nExpected layout:\n{layout.rstrip()}"
    )
