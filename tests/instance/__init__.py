"""Tests of the instance side (visa_instance)."""
