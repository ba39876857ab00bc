"""Training specs: the family defaults (the paper's protocol), the schema, merging."""
