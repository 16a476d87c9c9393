"""The coordinator process: state machine, node registry, API handlers, submit pipeline, event intake."""
