"""Conversations owned by users: which conversation a user's names mean, who may use it,
sharing, listing, renaming and deleting (see docs/DESIGN.md, "Conversations and ownership")."""
