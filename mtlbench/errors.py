"""The one exception type that the CLI turns into a one-line message and a nonzero exit."""


class UserError(Exception):
    """A problem the user can fix (bad option, missing file); shown as one line, no traceback."""
