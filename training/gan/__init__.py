"""DCGAN family: datasets, models, losses, metrics and the trainer."""
