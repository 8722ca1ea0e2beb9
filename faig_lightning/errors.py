"""The one exception type for bad user input: its message names the problem and the fix."""


class FaigError(Exception):
    """Bad input or state that the user can fix; the message says what and how."""
