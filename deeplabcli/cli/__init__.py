"""The ``deeplab`` command: a thin click shell over the library.

Subcommands live in their own modules and are imported only when used, so ``deeplab --help``
stays fast. Every :class:`~deeplabcli.errors.DeeplabError` becomes one ``Error: ...`` line and a
non-zero exit code; no traceback reaches the user.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .. import __version__
from ..errors import DeeplabError

#: subcommand name → "module:attribute" (relative to deeplabcli.cli), loaded on first use.
COMMANDS: dict[str, str] = {
    "predict": "predict:predict_command",
    "eval": "eval:eval_command",
    "export": "export:export_command",
    "data": "data:data",
    "train": "train:train",
    "finetune": "train:finetune",
    "bootstrap": "train:bootstrap",
    "models": "models:models_command",
    "download": "models:download_command",
    "convert": "models:convert_command",
    "info": "models:info_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on demand and whose errors are one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name].split(":")
            module = importlib.import_module(f"{__name__}.{module_name}")
            return getattr(module, attribute)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeeplabError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="deeplab")
def main() -> None:
    """DeepLabv3 semantic segmentation (Chen et al., 2017).

    \b
      deeplab predict photo.jpg -o mask.png
      deeplab eval --dataset voc --os 8 --flip
      deeplab bootstrap --classes bicycle,chair,sofa
    """


def run() -> None:  # pragma: no cover - console entry point
    main(prog_name="deeplab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
