"""The dashboard's screens: runs (home), detail, launch, compare, help, confirm."""
