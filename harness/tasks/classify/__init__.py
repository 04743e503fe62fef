"""Image classification: datasets and networks."""
