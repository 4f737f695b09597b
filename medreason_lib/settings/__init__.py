"""Run profiles as data, where files go, progress bars, the user-error type."""
