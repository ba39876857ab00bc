"""The training loop and what it runs on: batches, schedules, DDP, the run directory's lock."""
