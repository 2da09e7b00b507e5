"""vcell_lib: the small library behind The Virtual Cell Book.

Import the modules you need (``from vcell_lib import biology``); importing the package has
no side effects: no seeds, no downloads, no warnings filters, no plotting style.
"""

__version__ = "0.1.0"
