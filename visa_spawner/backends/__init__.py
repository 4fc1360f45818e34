"""VISA Hub."""
