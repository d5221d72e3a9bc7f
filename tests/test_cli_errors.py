"""Every mistake answered in one sentence with a documented exit code, whatever the options say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitkit.cli.main import main
from vitkit.errors import EXIT_BROKEN_PIPE, EXIT_NOTHING_DONE, EXIT_USER_ERROR, OptionError
from vitkit.training import build_config
from vitkit.training.config import RANGES

BAD = {
    "batch_size": [0, -1, 10**9],
    "image_size": [0, -5, 8, 100_000],
    "epochs": [0, -3],
    "lr": [0, -0.1, float("nan")],
    "val_fraction": [0, 1, 1.5],
    "label_smoothing": [1, -0.1],
    "optimizer": ["lion"],
    "augment": ["mixup-of-everything"],
    "std": ["1,0,1", "1,1"],
}


@pytest.mark.parametrize("option", sorted(BAD))
def test_bad_options_are_refused_in_the_callers_words(option, capsys, tmp_path):
    for value in BAD[option]:
        with pytest.raises(OptionError) as python_error:
            build_config(None, {option: value})
        assert str(python_error.value).startswith(f"{option} ") and "--" not in str(python_error.value)
        flag = "--" + option.replace("_", "-")
        code = main(["train", "--data", str(tmp_path / "none"), "--output", str(tmp_path / "run"), flag, str(value)])
        err = capsys.readouterr().err
        assert code == EXIT_USER_ERROR and err.count("\n") == 1, err
        assert err.startswith(f"vitkit train: error: {flag} ") and "Traceback" not in err
        assert not (tmp_path / "run").exists()  # refused before anything was written


def test_malformed_yaml_is_one_sentence(tmp_path, capsys):
    """Found by the property test below: a --model-args value that is not YAML was a traceback."""
    assert main(["train", "--data", "digits", "--model-args", "a: ["]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("vitkit train: error: --model-args takes a mapping")
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("epochs: [1,\n")
    assert main(["train", "--recipe", str(recipe)]) == EXIT_USER_ERROR
    assert "is not valid YAML" in capsys.readouterr().err


def test_every_numeric_option_has_a_range_and_the_recipes_pass_it():
    from vitkit.training.config import RECIPE_DIR

    for recipe in RECIPE_DIR.glob("*.yaml"):
        build_config(recipe.stem)  # raises if a shipped recipe breaks a range
    assert {"epochs", "batch_size", "image_size", "lr", "warmup_epochs", "workers"} <= set(RANGES)


OPTION_VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet="abc-,.=%:/0123456789 ", max_size=12),
    st.sampled_from(["", "none", "true", "-1", "0", "1e309", "--", "0x10"]),
)
TRAIN_OPTIONS = sorted(RANGES) + ["optimizer", "augment", "schedule", "amp", "mean", "std", "hflip", "model_args",
                                  "pretrained"]  # fmt: skip


@settings(max_examples=int(os.environ.get("VITKIT_HYPOTHESIS_EXAMPLES", 150)), deadline=None)
@given(
    command=st.sampled_from(["train", "eval", "predict", "export", "bench"]),
    option=st.sampled_from(TRAIN_OPTIONS + ["top_k", "batch_sizes", "quantize", "seconds", "format"]),
    value=OPTION_VALUES,
)
def test_random_option_values_end_in_one_line_and_a_nonzero_exit(command, option, value):
    """Whatever the value, every command either refuses it in one line (exit 2) or reaches the missing input
    and says so in one line: never an exception, never exit 0. (In process: an uncaught exception, which
    would print a traceback, fails the test.)"""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        flag = f"--{option.replace('_', '-')}={value}"
        argv = {
            "train": ["train", "--data", f"{tmp}/missing", "--output", f"{tmp}/run", flag],
            "eval": ["eval", f"{tmp}/missing", flag],
            "predict": ["predict", f"{tmp}/missing", f"{tmp}/img.png", flag],
            "export": ["export", f"{tmp}/missing", "--format", "onnx", flag],
            "bench": ["bench", f"{tmp}/missing", flag],
        }[command]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse's own refusals: usage line + one error line, exit 2
                code = e.code
        assert code != 0, out.getvalue()
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert lines and lines[-1].startswith("vitkit"), err.getvalue()
        assert not Path(f"{tmp}/run").exists()


def test_predict_with_nothing_readable_exits_1_and_python_takes_one_path(tmp_path, capsys):
    import vitkit
    from tests.serving import sample_photos, write_checkpoint

    run = write_checkpoint(tmp_path / "run")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert main(["predict", str(run), str(tmp_path / "broken.jpg")]) == EXIT_NOTHING_DONE
    assert "no input could be read" in capsys.readouterr().err
    photo = sample_photos(tmp_path / "photos")[0]
    assert main(["predict", str(run), str(tmp_path / "broken.jpg"), str(photo)]) == 0
    assert "1 of 2 inputs could not be read" in capsys.readouterr().err
    one = vitkit.predict(run, str(photo), top_k=2)  # a path alone, not its characters
    assert len(one) == 1 and one[0].path == str(photo) and len(one[0].top) == 2


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`vitkit samples digits ... | head -0`: the reader is gone before the first line (deterministic: with a
    reader that leaves later, the output may fit in the pipe's buffer and never meet the closed end)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitkit", "samples", "digits", "--output", str(tmp_path), "--count", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_help_texts_print_percent_signs_once(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "99.9%" in out and "%%" not in out
