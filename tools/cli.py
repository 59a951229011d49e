"""The `spotart` command line: a thin click layer. Each command builds a config object and calls
one library function; the commands live one concern per module in `spotart.tools.commands`."""

from __future__ import annotations

import importlib
import logging

import click

# command name -> "module:attribute" inside spotart.tools.commands. Imported lazily so that
# `spotart --help` does not pay for importing torch and DALI.
COMMANDS = {
    "make-sample": "shards:make_sample",
    "build-shards": "shards:build_shards",
    "verify-shards": "shards:verify_shards",
    "merge-manifests": "shards:merge_manifests",
    "permutations": "permutations:permutations",
    "preview": "preview:preview",
    "train": "train:train",
    "export-backbone": "train:export_backbone",
    "eval": "evaluate:evaluate",
    "profile": "profile:profile",
    "plot": "plot:plot",
    "audit": "audit:audit",
    "demo": "demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(f"spotart.tools.commands.{module}")
        except ModuleNotFoundError as err:
            if err.name == f"spotart.tools.commands.{module}":
                return None  # command not built yet
            raise
        return getattr(mod, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="spotart")
def main(verbose: int) -> None:
    """spotart: self-supervised features from unlabelled images (Learning to Spot Artifacts,
    context prediction, context encoders, jigsaw), fed by NVIDIA DALI."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
