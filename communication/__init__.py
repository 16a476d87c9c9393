"""NATS connection, subject names, JetStream set-up, pull consumers, codecs and the API client."""
