"""Living on a device: systemd service and diagnosis."""
