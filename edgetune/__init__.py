"""edgetune: fine-tune, export, quantize, verify and benchmark Hugging Face models for edge devices."""

__version__ = "0.1.0"
