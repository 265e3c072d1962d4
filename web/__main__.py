"""``python -m web``: run the facade (same as ``movierec serve web``)."""

import sys

from web.server import main

sys.exit(main(sys.argv[1:]))
