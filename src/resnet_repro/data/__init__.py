"""Data sets (in memory and streamed) and the test views of a trained network."""
