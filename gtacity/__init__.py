"""gtacity: GTA5 <-> Cityscapes image translation (CycleGAN), trained and run at speed.

The command line (``gtacity``) is a thin shell over :mod:`gtacity.engine` (inference) and
:mod:`gtacity.trainer` (learning); both share the networks in :mod:`gtacity.nets` and the generator
files of :mod:`gtacity.checkpoint`.
"""

__version__ = "0.1.0"
