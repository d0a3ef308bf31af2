"""`chainrule datasets`: the built-in datasets, each with its task, a one-line description and the
preset `chainrule train` uses for it (the settings that differ from the defaults)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("datasets", help="list the built-in datasets and their presets")
    parser.set_defaults(run=run)


def _preset_text(preset: dict) -> str:
    parts = []
    for key, value in preset.items():
        if key == "standardize":
            parts += [] if value else ["--no-standardize"]
            continue
        if isinstance(value, tuple):
            value = ",".join(map(str, value)) or "none"
        parts.append(f"--{key.replace('_', '-')} {'full' if value is None else value}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from chainrule.datasets import DATASETS
    from chainrule.experiment import PRESETS, TrainConfig

    width = max(len(name) for name in DATASETS)
    for name, info in DATASETS.items():
        task = f"{info.n_classes} classes" if info.task == "classification" else info.task
        print(f"{name:<{width}}  {task:<14} {info.description}")
        if name in PRESETS:
            print(f"{'':<{width}}  {'preset:':<14} {_preset_text(PRESETS[name])}")
        if f"{name}+conv" in PRESETS:
            print(f"{'':<{width}}  {'with --conv:':<14} {_preset_text(PRESETS[name + '+conv'])}")
    print(f"\na CSV, NPZ or IDX file: preset {_preset_text(PRESETS['file'])}")
    defaults = {
        key: getattr(TrainConfig, key)
        for key in ("hidden", "activation", "optimizer", "lr", "epochs", "batch_size")
    }
    print(f"every other setting: `chainrule train --help`; defaults {_preset_text(defaults)}")
    return 0
