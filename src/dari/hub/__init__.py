"""Connections: the registry per client_id, subscriptions, writers, and the replay log."""
