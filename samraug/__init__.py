"""samraug: lesion-mask-based synthesis of anatomic and molecular MRI (SAMR) for data augmentation."""

__version__ = "0.1.0"
