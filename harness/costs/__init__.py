"""What a network costs: operation counts and memory."""
