"""Before a run: the checks of a node (doctor) and the cost of a target (estimate)."""
