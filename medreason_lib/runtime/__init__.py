"""The machine a learner runs on: install, doctor, prefetch, time estimates."""
