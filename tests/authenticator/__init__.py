"""Tests of the hub-side authenticator package (visa_authenticator)."""
