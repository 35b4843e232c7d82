"""Who is connecting, and what they may see."""
