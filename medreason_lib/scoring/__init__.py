"""The answer template, the one answer extractor, the reward functions and the statistics."""
