"""Training on cached backbone outputs: feature banks, loops, mining, sessions, run folders."""
