"""Fake external services for tests: real servers on loopback ports, scripted by the test."""
