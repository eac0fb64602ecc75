"""From scores to decisions: metrics, hashes, thresholds, fusion, the run's decision, submissions."""
