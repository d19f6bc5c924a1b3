"""Atomic writes: a full disk or a crash never replaces a good file with a partial one."""

import errno, pytest
from ncfm import cli, fileio

def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "out.txt"
    target.write_text("previous")
    real_open = open
    def failing_open(path, mode="r", *a, **k):
        if "w" in mode and ".tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError):
        fileio.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_cli_reports_a_full_disk_without_a_traceback(monkeypatch, capsys):
    def handler(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/fold0/last.keras")

    monkeypatch.setattr(cli, "_cmd_validate", handler)
    monkeypatch.setattr(cli, "COMMANDS", [(n, a, handler if n == "validate" else r) for n, a, r in cli.COMMANDS])
    assert cli.main(["validate", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert "disk full writing runs/x/fold0/last.keras" in err
    assert "Traceback" not in err
