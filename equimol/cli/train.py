"""``equimol train CONFIG.yaml [section.key=value ...] [--resume]``: train a potential from a YAML config.

The configuration is read and checked in full first (:mod:`equimol.train.config`): an unknown key,
a value of the wrong type or a missing data file stops the command at once, before any data are
read, with a message naming the key (exit status 2). Then :func:`equimol.train.launch.train` fits,
exports ``run_dir/model.pt`` and reports the test-split errors.
"""

from __future__ import annotations

import argparse

from equimol.cli.arguments import add_command

HELP = "train a potential from a YAML config"
DESCRIPTION = (
    "Train from a YAML config with sections model, data, loss, optimizer, scheduler, trainer, finetune. "
    "Overrides are dotted section.key=value pairs, values parsed as YAML (trainer.max_epochs=3)."
)


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from equimol.errors import EquimolInputError

    if "=" in args.config and not Path(args.config).exists():
        words = [args.config, *args.overrides]
        config = next((word for word in words if "=" not in word), "CONFIG.yaml")
        order = " ".join([config, *(word for word in words if word != config)])
        raise EquimolInputError(f"{args.config!r} is an override; the config file comes first: equimol train {order}")
    if not Path(args.config).is_file():  # answered before torch is imported (equimol.cli: start-up)
        raise FileNotFoundError(f"config file {args.config!r} does not exist")
    from equimol.train.config import load_config

    config = load_config(args.config, args.overrides)
    from equimol.train.launch import train

    result = train(config, resume=args.resume, overwrite=args.overwrite)
    models = result["model"] if isinstance(result["model"], list) else [result["model"]]
    for model in models:  # a committee (trainer.committee_seeds) writes one model per member
        if model is not None:
            print(f"model written to {model}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``equimol`` parser."""
    parser = add_command(subparsers, "train", run_train, HELP, DESCRIPTION)
    parser.add_argument("config", help="YAML configuration file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in trainer.run_dir from its checkpoints/last.ckpt (the config must agree with its "
        "config.yaml on the model, data, optimizer, scheduler, precision and seed)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run in trainer.run_dir (refused without this flag)"
    )
