"""The worker process: consumers, execution slots, skill runtime, heartbeats."""
