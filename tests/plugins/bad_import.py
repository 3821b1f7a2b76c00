"""A plugin whose import fails (tests check that the original error is shown)."""

import slowthink_no_such_dependency  # noqa: F401


class ImportFails:
    pass
