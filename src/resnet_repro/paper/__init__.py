"""What the paper says: the names it gives models, its numbers and captions, the artifact catalogue."""
