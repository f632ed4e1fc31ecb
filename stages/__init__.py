"""proactive-rl pipeline stages (the `stages/` folder, imported as proactive_rl)."""
