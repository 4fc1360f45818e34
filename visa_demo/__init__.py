"""The demo data generator (`visa-make-demo-data`): simulated NeXus runs per demo proposal.

Kept out of visa_authenticator so the authenticator does not carry h5py/numpy code that only
the demo needs (they are the `demo` extra).
"""
