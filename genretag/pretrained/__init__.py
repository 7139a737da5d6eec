"""Importers of published weights: musicnn's TensorFlow 1 checkpoints, read with numpy alone.

:func:`resolve_checkpoint` is what every loader calls on a ``--ckpt`` value: ``musicnn-msd``
(or ``musicnn:MSD``, and MTT) becomes a converted checkpoint in the user's cache; a path stays.
"""

from genretag.pretrained.musicnn import import_musicnn, resolve_checkpoint

__all__ = ["import_musicnn", "resolve_checkpoint"]
