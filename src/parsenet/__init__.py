"""ParseNet: looking wider to see better (Liu, Rabinovich, Berg 2015), in PyTorch."""

__version__ = "0.1.0"
