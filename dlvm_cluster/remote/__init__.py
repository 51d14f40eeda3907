"""SSH to the nodes of an Inventory: connections, commands, fan-out, file sync."""
