"""visa-ops: the facility operations service (lifetimes, inactivity, warnings, extensions, banners)."""
