"""What runs on the device: the TFLite Micro runtime (and, later, the firmware emulator)."""
