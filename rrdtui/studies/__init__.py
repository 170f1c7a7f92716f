"""Studies: a grid of runs over seeds, trained by one runner and read back as one table."""
