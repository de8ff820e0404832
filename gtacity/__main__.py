"""``python -m gtacity ...`` (what ``torchrun -m gtacity train ...`` runs)."""

from gtacity.cli import main

main()
