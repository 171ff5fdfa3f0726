"""``python -m voicelab`` is the ``voicelab`` command."""

import sys

from .cli import main

sys.exit(main())
