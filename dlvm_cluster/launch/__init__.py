"""From (job, inventory) to per-node commands and environments; never opens a connection."""
