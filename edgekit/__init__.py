"""edgekit: MobileNet from laptop to Raspberry Pi / Coral: convert, run, operate."""

__version__ = "0.1.0"
