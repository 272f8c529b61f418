"""Pixel-based charge-transfer-inefficiency model and correction (arCTIc)."""
