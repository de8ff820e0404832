"""Folder jobs: the job itself, its journal and manifest, shards, and dataset trees with labels."""
