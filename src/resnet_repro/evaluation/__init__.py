"""A trained network evaluated: test views, ensembles, layer responses."""
