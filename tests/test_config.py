"""Config files: a bad one stops `ncfm train` with one line that names the file, the setting and
the fix, before anything is written; a good one sets values of the declared types."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from ncfm import NcfmError
from ncfm.cli import main
from ncfm.config import TrainConfig, make_config


def train_with_config(tmp_path: Path, config: Path, capsys) -> tuple[int, str]:
    """Run `ncfm train` with --config; its exit code and stderr."""
    code = main(["train", "--fold", "0", "--run", str(tmp_path / "run"), "--data-dir", str(tmp_path),
                 "--config", str(config)])
    return code, capsys.readouterr().err


BAD_TOML = {
    "malformed": ("epochs = 3\nbackbone = xception\n",
                  r"not valid TOML: .*\(at line 2, column 12\)\. .*strings in quotes"),
    "a word for an integer": ('epochs = "many"\n', r'epochs = "many": expected an integer'),
    "a float for an integer": ("batch_size = 32.5\n", r"batch_size = 32.5: expected an integer"),
    "a string for a number": ('lr = "1e-3"\n', r'lr = "1e-3": expected a number'),
    "a word for a bool": ('hflip = "yes"\n', r'hflip = "yes": expected true or false'),
    "a number for a bool": ("vflip = 1\n", r"vflip = 1: expected true or false"),
    "a bool for a string": ("freeze_bn = true\n",
                            r'freeze_bn = true: expected a string in quotes \(write freeze_bn = "true"\)'),
    "two bad values at once": ('epochs = "many"\nseed = 1.5\n',
                               r'epochs = "many": expected an integer; seed = 1.5: expected an integer'),
    "an unknown key": ("epochs = 3\nlearning_rate = 0.1\n", r"unknown setting 'learning_rate'"),
    "a misspelt key": ("head_epoch = 2\n", r"unknown setting 'head_epoch' \(did you mean head_epochs\?\)"),
    "a dashed key": ("batch-size = 8\n", r"'batch-size' \(did you mean batch_size\?\)"),
    "keys outside [train]": ("epochs = 3\n[train]\nseed = 1\n", r"epochs outside the \[train\] table"),
}


@pytest.mark.parametrize("case", list(BAD_TOML))
def test_a_bad_config_file_is_one_error_line_naming_it_and_nothing_is_written(case, tmp_path, capsys):
    text, message = BAD_TOML[case]
    config = tmp_path / "cfg.toml"
    config.write_text(text)
    code, err = train_with_config(tmp_path, config, capsys)
    assert code == 2
    assert err.startswith(f"ncfm train: error: {config}: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_missing_config_file_is_named_with_its_flag(tmp_path, capsys):
    code, err = train_with_config(tmp_path, tmp_path / "missing.toml", capsys)
    assert code == 2 and "Traceback" not in err
    assert f"--config {tmp_path / 'missing.toml'}: config file not found" in err
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_is_not_text_is_refused(tmp_path, capsys):
    config = tmp_path / "cfg.toml"
    config.write_bytes(b"epochs = 3\n\xff\xfe\n")
    code, err = train_with_config(tmp_path, config, capsys)
    assert code == 2 and f"{config}: not a text file (byte 11 is not UTF-8)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("yaml") is None, reason="PyYAML is not installed")
def test_malformed_yaml_names_the_file_and_the_line(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("epochs: 3\nbackbone: [xception\n")
    code, err = train_with_config(tmp_path, config, capsys)
    assert code == 2 and f"{config}: not valid YAML at line 3, column 1: expected ',' or ']'" in err
    assert not (tmp_path / "run").exists()


def test_file_values_take_their_declared_types_and_ints_serve_as_floats(tmp_path):
    config = tmp_path / "cfg.toml"
    config.write_text('[train]\nbackbone = "xception"\nepochs = 4\nrotation = 5\ndropout = 0.25\n'
                      'hflip = false\n')
    cfg = make_config(str(config), epochs=9)
    assert (cfg.backbone, cfg.epochs, cfg.dropout, cfg.hflip) == ("xception", 9, 0.25, False)  # flags win
    assert cfg.rotation == 5.0 and isinstance(cfg.rotation, float)
    assert cfg.batch_size == TrainConfig.batch_size  # untouched defaults stay


def test_make_config_raises_the_same_error_for_programmatic_callers(tmp_path):
    config = tmp_path / "cfg.toml"
    config.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(NcfmError, match=r"cfg.toml: unknown setting 'learning_rate'"):
        make_config(str(config))


def test_train_has_no_resume_flag_because_resuming_is_automatic(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--fold", "0", "--run", str(tmp_path / "run"), "--resume"])
    assert exit_.value.code == 2 and "unrecognized arguments: --resume" in capsys.readouterr().err


def test_a_recipe_fills_only_what_neither_the_config_file_nor_a_flag_sets(tmp_path, monkeypatch):
    from ncfm import config

    assert make_config(recipe="classic") == TrainConfig()  # classic is today's defaults, field by field
    for recipe, settings in config.RECIPES.items():  # each preset's values are fields that exist
        assert dataclasses.asdict(make_config(recipe=recipe)) == dataclasses.asdict(TrainConfig()) | settings | {
            "recipe": recipe}
    monkeypatch.setitem(config.RECIPES, "modern", {"ema": 0.99, "mix": "both", "randaugment": "trivial"})
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('recipe = "modern"\nema = 0.999\n')
    chosen = make_config(str(cfg), mix="none")
    assert (chosen.recipe, chosen.ema, chosen.mix) == ("modern", 0.999, "none")  # file and flag win
    assert chosen.randaugment == "trivial"  # the recipe fills the rest
    with pytest.raises(NcfmError, match="recipe must be classic or modern; received recipe='timm'"):
        make_config(recipe="timm")



def test_the_modern_recipe_recomputes_batchnorm_unless_told_not_to():
    # the one addition that beat classic on Fashion-MNIST's test images (docs/recipe.md)
    assert make_config(recipe="modern").precise_bn == 2048
    assert make_config(recipe="modern", precise_bn=0).precise_bn == 0
    assert make_config().precise_bn == 0  # classic: off
