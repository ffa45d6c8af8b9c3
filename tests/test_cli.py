"""CLI error handling: user errors print one clear line, no traceback; other errors propagate."""
import pytest

from jflow.cli import friendly_errors
from jflow.data.errors import DatasetError
from jflow.io import FlowFileError


@pytest.mark.parametrize("error", [
    DatasetError("MpiSintel: folder '/x/Sintel/training/clean' not found\nExpected layout: ..."),
    FlowFileError("/x/a.flo: wrong magic number"),
])
def test_user_errors_exit_1_with_the_message_only(error, capsys):
    def main(argv):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        friendly_errors(main)(["prog"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(error) in err and "Traceback" not in err


def test_programming_errors_still_raise():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        friendly_errors(main)(["prog"])


def test_main_returns_normally():
    assert friendly_errors(lambda argv: 7)(["prog"]) == 7
