"""Long work in a log (stderr not a terminal) prints a line at a steady interval instead of nothing."""

from __future__ import annotations

from vitkit.progress import LogProgress, progress


def test_a_log_gets_lines_with_count_rate_and_time_left(monkeypatch, capsys):
    monkeypatch.setenv("VITKIT_PROGRESS_SECONDS", "0")
    bar = progress(range(4), desc="decoding", unit="file")
    assert isinstance(bar, LogProgress)  # capsys' stderr is not a terminal
    bar.set_postfix(loss="0.5")
    assert list(bar) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("decoding: 1/4 file (25%), ") and "file/s" in lines[0] and "left, loss 0.5" in lines[0]
    assert len(lines) == 3  # the last step prints nothing: the work is done and says so itself


def test_the_interval_spaces_the_lines(monkeypatch, capsys):
    monkeypatch.setenv("VITKIT_PROGRESS_SECONDS", "3600")
    for _ in progress(range(1000), desc="quiet"):
        pass
    assert capsys.readouterr().err == ""
    for _ in progress(range(10), desc="off", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_training_in_a_log_reports_its_epochs_progress(monkeypatch, capsys, tmp_path):
    from vitkit.training import train

    monkeypatch.setenv("VITKIT_PROGRESS_SECONDS", "0")
    monkeypatch.chdir(tmp_path)
    train(model="vit_cifar", data="digits", image_size=32, epochs=1, batch_size=256, output="run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch 1/1: ")]
    assert lines and "batch/s" in lines[0] and "left" in lines[0] and "loss" in lines[-1]
