"""The sans-IO core: pure functions and data structures; time comes in as arguments."""
