"""Evaluation of learned representations: unit quality against phone alignments (`units`)."""
