"""The one exception type for mistakes a user can make (bad file, bad config, bad checkpoint).

The CLI prints its message on one line and exits with status 2, without a traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message says what to do about it."""
