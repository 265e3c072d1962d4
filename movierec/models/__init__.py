"""The recommendation models (fusion two-tower, PinSage) and their shared artifact format."""
