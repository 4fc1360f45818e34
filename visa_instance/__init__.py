"""VISA Hub, instance side: the desktop served inside each single-user server."""


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Enabled as ``visa_instance`` in ``ServerApp.jpserver_extensions``."""
    return [{"module": "visa_instance.extension"}]
