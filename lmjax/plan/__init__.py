"""lmjax-plan: the real train step compiled ahead of time for a slice that is not present."""
