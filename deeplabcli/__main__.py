"""``python -m deeplabcli`` (also what ``torchrun -m deeplabcli`` runs)."""

from .cli import main

main(prog_name="deeplab")
