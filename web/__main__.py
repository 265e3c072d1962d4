"""``python -m movierec.apps.web``: run the facade (same as ``movierec serve web``)."""

import sys

from movierec.apps.web.server import main

sys.exit(main(sys.argv[1:]))
