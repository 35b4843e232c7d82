"""Agent backends: anything that turns a message (plus history) into a stream of text pieces."""
