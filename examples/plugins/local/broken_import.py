"""A plugin that cannot be imported (it needs a package that is not installed): TNX010."""

import tnx_package_that_is_not_installed  # noqa: F401

TNX_PLUGIN: dict[str, list[object]] = {}
