"""What the command line does with an exception: an input error (:class:`equimol.errors.EquimolInputError`) is one
line and exit status 2; anything else is a bug, shown with its traceback and a line saying so (exit status 1);
old spellings print one deprecation line; options given before their command name the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_train_e2e import tiny_config

from equimol.cli import BUG_EXIT, USAGE_ERROR, main
from equimol.errors import ConfigError, EquimolInputError


def _config(shared_data: Path, folder: Path, **trainer) -> str:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(shared_data, folder, max_epochs=1, **trainer)))
    return str(path)


@pytest.mark.parametrize("error", [RuntimeError, ValueError])
def test_an_error_inside_training_is_a_bug_with_its_traceback(
    shared_data: Path, tmp_path: Path, monkeypatch, capsys, error
) -> None:
    """A plain ValueError is no longer taken for bad input: only EquimolInputError is."""
    from equimol.train.module import PotentialModule

    def broken_step(self, batch, batch_index):
        raise error("deliberate failure inside the training step")

    monkeypatch.setattr(PotentialModule, "training_step", broken_step)
    assert main(["train", _config(shared_data, tmp_path)]) == BUG_EXIT
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "deliberate failure inside the training step" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"equimol train: {error.__name__}: this is a bug in equimol") and "report" in last


def test_a_bad_input_is_one_line_and_debug_shows_its_traceback(shared_data: Path, tmp_path: Path, capsys) -> None:
    config = _config(shared_data, tmp_path)
    assert main(["train", config, "optimizer.lr=-1"]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equimol train: error: ") and "optimizer.lr must be > 0" in err
    assert "tiny.yaml" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="optimizer.lr"):
        main(["train", config, "optimizer.lr=-1", "--debug"])
    assert issubclass(ConfigError, EquimolInputError)


def test_an_old_key_prints_one_deprecation_line(shared_data: Path, tmp_path: Path, capsys) -> None:
    config = _config(shared_data, tmp_path)
    assert main(["train", config, "trainer.compile=false", "data.batch_size=0"]) == USAGE_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (
        "equimol train: deprecated: trainer.compile is deprecated, use trainer.compile_step (same meaning)"
    )
    assert lines[1].startswith("equimol train: error: ") and len(lines) == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--resume", "train", "c.yaml"],
            "equimol train: error: --resume is an option of `equimol train` and goes after the command: "
            "equimol train c.yaml --resume",
        ),
        (["--resume"], "equimol: error: --resume goes after a command"),
        (
            ["train", "trainer.max_epochs=3", "c.yaml"],
            "equimol train: error: 'trainer.max_epochs=3' is an override; the config file comes first: "
            "equimol train c.yaml trainer.max_epochs=3",
        ),
    ],
)
def test_an_option_out_of_order_names_its_command(tmp_path: Path, monkeypatch, capsys, argv, expected) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1
