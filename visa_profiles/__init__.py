"""What turns environment variables and shared settings into hub config.

The profiles in hub_config/ are thin files that import from here, so the same code is
importable from tests, scripts and any operator's own jupyterhub_config.py without sys.path
edits:

- `common`: hub and instance settings every profile shares (proxy, pages, sandbox, VM plan);
- `production`: identity, catalogue and hub database from environment variables;
- `openstack`: the OpenStack backend's settings from environment variables;
- `env`: the reader both use, which lists every bad variable at once (`SettingsError`).
"""
