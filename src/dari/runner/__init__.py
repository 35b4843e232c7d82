"""Running answers: one at a time per conversation, in arrival order, apart from any socket."""
