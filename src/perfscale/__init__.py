"""perfscale: will it fit, how fast will it be, what should I change.

Memory and speed of Hugging Face transformers for training and inference, estimated,
traced on fake tensors and measured, on any hardware from a catalogue or detected locally.
Heavy libraries (torch, transformers) are imported only where they are used, so that
`import perfscale` and `perfscale --help` stay instant.
"""

__version__ = "0.1.0"
