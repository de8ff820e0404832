"""``python -m gtacity ...`` (what ``torchrun -m gtacity train ...`` runs)."""

from gtacity.cli import main

# Guarded: DataLoader workers are spawned and re-import the main module under another name.
if __name__ == "__main__":
    main()
