"""Synthetic data, kept apart from the readers of real layouts (genretag.data): the demo corpus
in FMA's layout (demo, with its music in music) and an FSDKaggle2018-shaped corpus (freesound)."""
