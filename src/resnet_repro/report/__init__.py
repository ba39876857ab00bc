"""Figures, tables, the verdicts on the paper's claims, and the reproduction report."""
