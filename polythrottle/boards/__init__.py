"""Board profiles and what they imply: the profile YAML declared (``schema``), found and loaded
(``profiles``), turned into a Jetson's clock and power paths (``layout``); ``validation`` holds the
declared-validation base and the one-line errors shared with the twin's parameters."""
