"""asv benchmark suite of nbnorm (see README.md in this folder)."""
